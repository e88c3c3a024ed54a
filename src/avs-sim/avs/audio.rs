//! What a Recognize's audio part holds: 16-bit little-endian mono PCM at
//! 16 kHz (protocol brief §D.7). Tracks the byte count and timing, keeps
//! the PCM for `GET /audio`, measures loudness per 100 ms window (for the
//! silence check and the crude end-of-speech detector).

use bytes::BytesMut;
use tokio::time::{Duration, Instant};

use super::state::MAX_KEPT_AUDIO_BYTES;

/// 100 ms at 16 kHz.
const WINDOW: usize = 1600;

/// What the audio part held so far.
pub(super) struct Audio {
    pub(super) pcm: BytesMut,
    pub(super) bytes: u64,
    pub(super) first_at: Option<Instant>,
    pub(super) last_at: Option<Instant>,
    /// An odd byte waiting for its partner from the next DATA frame.
    carry: Option<u8>,
    sum: f64,
    n: usize,
    pub(super) peak_rms: f64,
    threshold: f64,
    speech_seen: bool,
    trailing_silence: Duration,
}

impl Audio {
    /// Nothing heard yet; `threshold` is the RMS that counts as speech.
    pub(super) fn new(threshold: f64) -> Self {
        Self {
            pcm: BytesMut::new(),
            bytes: 0,
            first_at: None,
            last_at: None,
            carry: None,
            sum: 0.0,
            n: 0,
            peak_rms: 0.0,
            threshold,
            speech_seen: false,
            trailing_silence: Duration::ZERO,
        }
    }

    /// Take a chunk; true when `end_of_speech` of silence followed speech.
    pub(super) fn push(
        &mut self,
        chunk: &[u8],
        now: Instant,
        end_of_speech: Option<Duration>,
    ) -> bool {
        if chunk.is_empty() {
            return false;
        }
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        self.bytes += chunk.len() as u64;
        if self.pcm.len() + chunk.len() <= MAX_KEPT_AUDIO_BYTES {
            self.pcm.extend_from_slice(chunk);
        }
        let mut rest = chunk;
        if let Some(lo) = self.carry.take()
            && let Some((&hi, tail)) = rest.split_first()
        {
            self.sample(i16::from_le_bytes([lo, hi]));
            rest = tail;
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            self.sample(i16::from_le_bytes([p[0], p[1]]));
        }
        self.carry = pairs.remainder().first().copied();
        end_of_speech.is_some_and(|eos| self.speech_seen && self.trailing_silence >= eos)
    }

    fn sample(&mut self, s: i16) {
        self.sum += f64::from(s) * f64::from(s);
        self.n += 1;
        if self.n == WINDOW {
            self.close_window();
        }
    }

    fn close_window(&mut self) {
        if self.n == 0 {
            return;
        }
        let rms = (self.sum / self.n as f64).sqrt();
        self.peak_rms = self.peak_rms.max(rms);
        if rms >= self.threshold {
            self.speech_seen = true;
            self.trailing_silence = Duration::ZERO;
        } else if self.speech_seen {
            self.trailing_silence += Duration::from_micros(self.n as u64 * 1_000_000 / 16_000);
        }
        self.sum = 0.0;
        self.n = 0;
    }

    /// `Ok(true)` for speech, `Ok(false)` for silence, `Err` for audio
    /// that is not 16-bit PCM.
    pub(super) fn verdict(&mut self) -> Result<bool, String> {
        self.close_window();
        if self.bytes == 0 {
            return Err("the audio part is empty".into());
        }
        if self.bytes % 2 == 1 {
            return Err(format!(
                "{} bytes of audio is not a whole number of 16-bit samples",
                self.bytes
            ));
        }
        Ok(self.peak_rms >= self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm(samples: impl Iterator<Item = i16>) -> Vec<u8> {
        samples.flat_map(i16::to_le_bytes).collect()
    }

    #[test]
    fn tone_is_speech_silence_is_not_and_odd_bytes_are_refused() {
        let tone = pcm((0..16_000).map(|i| {
            let t = i as f64 / 16_000.0;
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        }));
        let now = Instant::now();
        let mut a = Audio::new(200.0);
        // Odd-sized chunks: samples straddle DATA frames.
        for c in tone.chunks(333) {
            a.push(c, now, None);
        }
        assert_eq!(a.verdict(), Ok(true));
        assert!((a.peak_rms - 5657.0).abs() < 50.0, "{}", a.peak_rms);

        let mut s = Audio::new(200.0);
        s.push(&pcm((0..16_000).map(|i| (i % 7) as i16 - 3)), now, None);
        assert_eq!(s.verdict(), Ok(false));

        let mut odd = Audio::new(200.0);
        odd.push(&[1, 2, 3], now, None);
        assert!(odd.verdict().unwrap_err().contains("16-bit"));
    }

    #[test]
    fn end_of_speech_after_trailing_silence() {
        let now = Instant::now();
        let mut a = Audio::new(200.0);
        let eos = Some(Duration::from_millis(500));
        assert!(!a.push(&pcm(std::iter::repeat_n(0, 8000)), now, eos));
        assert!(!a.push(&pcm(std::iter::repeat_n(4000, 8000)), now, eos));
        assert!(!a.push(&pcm(std::iter::repeat_n(0, 6400)), now, eos));
        assert!(a.push(&pcm(std::iter::repeat_n(0, 1600)), now, eos));
    }
}
