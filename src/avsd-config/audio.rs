//! `[audio]`: which ALSA devices avsd captures from and plays to, and the
//! limits of one spoken request.

use std::time::Duration;

use serde::Deserialize;

use kit::strict::Invalid;

/// The ALSA device used when the config names none.
pub const DEFAULT_DEVICE: &str = "default";

/// The sample types avsd reads and writes. Devices offering only others
/// (8-bit, 24-bit in 32, DSD) are refused with `UnsupportedFormat` by avsd's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleKind {
    /// Signed 16-bit, native endian (what ALSA calls `S16_LE` here).
    I16,
    /// Signed 32-bit.
    I32,
    /// 32-bit float.
    F32,
}

impl SampleKind {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            SampleKind::I16 => 2,
            SampleKind::I32 | SampleKind::F32 => 4,
        }
    }
}

/// A device-side stream format: what the ALSA device is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamFormat {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels per frame.
    pub channels: u16,
    /// Sample type.
    pub sample: SampleKind,
}

impl StreamFormat {
    /// Frames in one 10 ms period at this rate (at least 1).
    pub fn frames_per_10ms(&self) -> u32 {
        (self.rate / 100).max(1)
    }

    /// Bytes in one frame.
    pub fn frame_bytes(&self) -> usize {
        self.sample.bytes() * usize::from(self.channels)
    }
}

impl std::fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} Hz, {} channel(s), {:?}",
            self.rate, self.channels, self.sample
        )
    }
}

/// `[audio]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// ALSA PCM of the microphone.
    pub capture_device: String,
    /// Open the microphone with exactly this format (`SAMPLE:RATE:CHANNELS`,
    /// e.g. `i16:16000:1`); unset lets avsd choose.
    pub capture_format: Option<String>,
    /// ALSA PCM of the speaker.
    pub playback_device: String,
    /// Open the speaker with exactly this format; unset uses its default.
    pub playback_format: Option<String>,
    /// The ALSA mixer control (e.g. `PCM`) of the playback device's card
    /// that the Speaker volume sets; unset: a software gain on the mix.
    pub mixer_control: Option<String>,
    /// The longest a Tap or Hold may listen before avsd ends the request.
    pub max_listen_secs: u64,
    /// RMS (16-bit scale) of 10 ms of audio above which ExpectSpeech counts
    /// the user as speaking.
    pub speech_threshold: f64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            capture_device: DEFAULT_DEVICE.to_string(),
            capture_format: None,
            playback_device: DEFAULT_DEVICE.to_string(),
            playback_format: None,
            mixer_control: None,
            max_listen_secs: 15,
            speech_threshold: 300.0,
        }
    }
}

/// ALSA's longest control name (`SNDRV_CTL_ELEM_ID_NAME_MAXLEN` less the NUL).
const MAX_CONTROL_NAME: usize = 43;

fn check_control_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_CONTROL_NAME {
        return Err(format!("ALSA names are at most {MAX_CONTROL_NAME} bytes"));
    }
    if !name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err("ALSA names are printable ASCII".into());
    }
    Ok(())
}

/// The ALSA control device (`hw:…`) of the card that plays `device`: the
/// card named by `CARD=` or by number in the PCM name (`plughw:CARD=Headphones`,
/// `hw:1,0`), else `default`. The Speaker volume's mixer control is looked up
/// there.
pub fn mixer_card(device: &str) -> String {
    if let Some(rest) = device.split_once("CARD=").map(|(_, r)| r) {
        let card: String = rest.chars().take_while(|c| *c != ',').collect();
        if !card.is_empty() {
            return format!("hw:CARD={card}");
        }
    }
    if let Some((_, rest)) = device.split_once(':') {
        let card: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !card.is_empty() && device.contains("hw:") {
            return format!("hw:{card}");
        }
    }
    "default".to_string()
}

impl AudioConfig {
    /// Every problem with the `[audio]` keys.
    pub(crate) fn validate(&self, out: &mut Vec<Invalid>) {
        for (key, name) in [
            ("audio.capture_device", &self.capture_device),
            ("audio.playback_device", &self.playback_device),
        ] {
            if name.trim().is_empty() {
                out.push(Invalid::new(
                    key,
                    "the device name is empty",
                    "remove the line to use \"default\", or name an ALSA PCM (`aplay -L` lists them)",
                ));
            }
        }
        for (key, format) in [
            ("audio.capture_format", &self.capture_format),
            ("audio.playback_format", &self.playback_format),
        ] {
            if let Some(text) = format
                && let Err(why) = parse_format(text)
            {
                out.push(Invalid::new(
                    key,
                    format!("`{text}` is not a format: {why}"),
                    "write SAMPLE:RATE:CHANNELS with SAMPLE one of i16, i32, f32, e.g. \"i16:16000:1\"; or remove the line",
                ));
            }
        }
        if let Some(name) = &self.mixer_control
            && let Err(why) = check_control_name(name)
        {
            out.push(Invalid::new(
                "audio.mixer_control",
                format!("`{name}` is not a mixer control name: {why}"),
                "name a simple control of the playback card as `amixer scontrols` lists it \
                 (e.g. \"PCM\" on the Pi's headphone jack); or remove the line for a software volume",
            ));
        }
        if !(1..=60).contains(&self.max_listen_secs) {
            out.push(Invalid::new(
                "audio.max_listen_secs",
                format!("{} is out of range", self.max_listen_secs),
                "use 1 to 60 seconds",
            ));
        }
        if !(1.0..=32767.0).contains(&self.speech_threshold) {
            out.push(Invalid::new(
                "audio.speech_threshold",
                format!("{} is out of range", self.speech_threshold),
                "use 1 to 32767; 300 suits a quiet room, raise it where it is noisy",
            ));
        }
    }

    /// The microphone's forced format, if `audio.capture_format` gives a
    /// valid one.
    pub fn capture_stream_format(&self) -> Option<StreamFormat> {
        self.capture_format
            .as_deref()
            .and_then(|f| parse_format(f).ok())
    }

    /// The speaker's forced format, if `audio.playback_format` gives a
    /// valid one.
    pub fn playback_stream_format(&self) -> Option<StreamFormat> {
        self.playback_format
            .as_deref()
            .and_then(|f| parse_format(f).ok())
    }

    /// [`max_listen_secs`](Self::max_listen_secs) as a duration.
    pub fn max_listen(&self) -> Duration {
        Duration::from_secs(self.max_listen_secs)
    }
}

/// `SAMPLE:RATE:CHANNELS`, e.g. `f32:48000:2`.
pub fn parse_format(text: &str) -> Result<StreamFormat, String> {
    let fields: Vec<&str> = text.split(':').map(str::trim).collect();
    let [sample, rate, channels] = fields[..] else {
        return Err("it needs three fields separated by `:`".into());
    };
    let sample = match sample.to_ascii_lowercase().as_str() {
        "i16" | "s16" | "s16le" => SampleKind::I16,
        "i32" | "s32" | "s32le" => SampleKind::I32,
        "f32" | "float" => SampleKind::F32,
        other => return Err(format!("unknown sample type `{other}`")),
    };
    let rate: u32 = rate
        .parse()
        .ok()
        .filter(|r| (8_000..=192_000).contains(r))
        .ok_or_else(|| format!("rate `{rate}` is not 8000 to 192000"))?;
    let channels: u16 = channels
        .parse()
        .ok()
        .filter(|c| (1..=8).contains(c))
        .ok_or_else(|| format!("channels `{channels}` is not 1 to 8"))?;
    Ok(StreamFormat {
        rate,
        channels,
        sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_bad_ones_say_which_field() {
        let f = parse_format("f32:48000:2").unwrap();
        assert_eq!((f.sample, f.rate, f.channels), (SampleKind::F32, 48_000, 2));
        assert_eq!(
            parse_format("S16LE:16000:1").unwrap().sample,
            SampleKind::I16
        );
        assert!(
            parse_format("i16:16000")
                .unwrap_err()
                .contains("three fields")
        );
        assert!(parse_format("u8:16000:1").unwrap_err().contains("`u8`"));
        assert!(parse_format("i16:100:1").unwrap_err().contains("rate"));
        assert!(
            parse_format("i16:16000:0")
                .unwrap_err()
                .contains("channels")
        );
    }
}
