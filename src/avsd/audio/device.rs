//! Finding an ALSA device by name and choosing the format to open it with.

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{
    BufferSize, SampleFormat, StreamConfig, SupportedBufferSize, SupportedStreamConfigRange,
};

use super::{AVS_SAMPLE_RATE, AudioError, DEFAULT_DEVICE, Direction};

pub use avsd_config::audio::{SampleKind, StreamFormat};

/// The cpal sample format of a [`SampleKind`] and back; cpal stays out of
/// the config crate that defines the kinds.
fn sample_from_cpal(format: SampleFormat) -> Option<SampleKind> {
    match format {
        SampleFormat::I16 => Some(SampleKind::I16),
        SampleFormat::I32 => Some(SampleKind::I32),
        SampleFormat::F32 => Some(SampleKind::F32),
        _ => None,
    }
}

fn sample_to_cpal(kind: SampleKind) -> SampleFormat {
    match kind {
        SampleKind::I16 => SampleFormat::I16,
        SampleKind::I32 => SampleFormat::I32,
        SampleKind::F32 => SampleFormat::F32,
    }
}

/// Picks, among the configurations a capture device offers, the one closest
/// to what AVS takes (16 kHz mono 16-bit): first the rate (16 kHz itself, else
/// the nearest rate above it, since downsampling loses nothing AVS wants; a rate
/// below 16 kHz only as a last resort), then the fewest channels, then the
/// sample type (i16, then f32, then i32). `None` when nothing usable is offered.
pub fn choose_capture_format(ranges: &[SupportedStreamConfigRange]) -> Option<StreamFormat> {
    ranges
        .iter()
        .filter_map(|r| {
            let sample = sample_from_cpal(r.sample_format())?;
            if r.channels() == 0 {
                return None;
            }
            let rate = AVS_SAMPLE_RATE.clamp(r.min_sample_rate(), r.max_sample_rate());
            Some(StreamFormat {
                rate,
                channels: r.channels(),
                sample,
            })
        })
        .min_by_key(|f| {
            let rate_cost = if f.rate >= AVS_SAMPLE_RATE {
                u64::from(f.rate - AVS_SAMPLE_RATE)
            } else {
                // Below 16 kHz AVS would get upsampled, band-limited audio.
                1_000_000 + u64::from(AVS_SAMPLE_RATE - f.rate)
            };
            let sample_cost = match f.sample {
                SampleKind::I16 => 0,
                SampleKind::F32 => 1,
                SampleKind::I32 => 2,
            };
            (rate_cost, f.channels, sample_cost)
        })
}

/// Picks the playback format: the device's own default when avsd can write
/// its sample type, else the best offered one by cpal's ranking.
pub(crate) fn choose_playback_format(
    default: Option<cpal::SupportedStreamConfig>,
    ranges: &[SupportedStreamConfigRange],
) -> Option<StreamFormat> {
    if let Some(d) = default
        && let Some(sample) = sample_from_cpal(d.sample_format())
        && d.channels() > 0
    {
        return Some(StreamFormat {
            rate: d.sample_rate(),
            channels: d.channels(),
            sample,
        });
    }
    let mut usable: Vec<&SupportedStreamConfigRange> = ranges
        .iter()
        .filter(|r| sample_from_cpal(r.sample_format()).is_some() && r.channels() > 0)
        .collect();
    usable.sort_by(|a, b| a.cmp_default_heuristics(b));
    let best = usable.last()?;
    let rate = 48_000.clamp(best.min_sample_rate(), best.max_sample_rate());
    Some(StreamFormat {
        rate,
        channels: best.channels(),
        sample: sample_from_cpal(best.sample_format())?,
    })
}

/// The ALSA host. avsd talks to ALSA directly (not PulseAudio or PipeWire):
/// on the Pi there is no sound server, and ALSA names are what the config holds.
pub(crate) fn alsa_host(name: &str, direction: Direction) -> Result<cpal::Host, AudioError> {
    cpal::host_from_id(cpal::HostId::Alsa).map_err(|e| AudioError::Open {
        name: name.to_string(),
        direction,
        detail: e.to_string(),
    })
}

/// The names ALSA lists for a direction, `default` first.
pub(crate) fn device_names(host: &cpal::Host, direction: Direction) -> Vec<String> {
    let mut names = vec![DEFAULT_DEVICE.to_string()];
    let devices = match direction {
        Direction::Capture => host.input_devices().map(|d| d.collect::<Vec<_>>()),
        Direction::Playback => host.output_devices().map(|d| d.collect::<Vec<_>>()),
    };
    for d in devices.unwrap_or_default() {
        if let Ok(id) = d.id() {
            let id = id.id().to_string();
            if !names.contains(&id) {
                names.push(id);
            }
        }
    }
    names
}

/// Finds the device called `name` (an ALSA PCM name such as `default`,
/// `hw:1,0` or one defined with a hint in asound.conf).
pub(crate) fn find_device(
    host: &cpal::Host,
    name: &str,
    direction: Direction,
) -> Result<cpal::Device, AudioError> {
    let found = if name == DEFAULT_DEVICE {
        match direction {
            Direction::Capture => host.default_input_device(),
            Direction::Playback => host.default_output_device(),
        }
    } else {
        host.device_by_id(&cpal::DeviceId::new(cpal::HostId::Alsa, name))
    };
    found.ok_or_else(|| AudioError::NoDevice {
        name: name.to_string(),
        direction,
        available: device_names(host, direction),
    })
}

/// The stream config for a format, asking for a fixed period of `period_ms`.
/// cpal's default lets ALSA choose, and with some plugins that means one
/// frame per callback. Capture uses 10 ms (the AVS chunk, so latency is one
/// period); playback 20 ms, since an answer can start 40 ms later but must
/// not crackle on a busy Pi (cpal keeps two periods in the ALSA buffer).
pub(crate) fn stream_config(
    format: StreamFormat,
    buffer: Option<&SupportedBufferSize>,
    period_ms: u32,
) -> StreamConfig {
    let mut frames = (format.rate * period_ms / 1000).max(1);
    if let Some(SupportedBufferSize::Range { min, max }) = buffer {
        frames = frames.clamp(*min, (*max).max(*min));
    }
    StreamConfig {
        channels: format.channels,
        sample_rate: format.rate,
        buffer_size: BufferSize::Fixed(frames),
    }
}

/// The buffer-size range the device reports for a format, if it lists it.
pub(crate) fn buffer_range(
    ranges: &[SupportedStreamConfigRange],
    format: StreamFormat,
) -> Option<SupportedBufferSize> {
    ranges
        .iter()
        .find(|r| {
            r.channels() == format.channels
                && r.sample_format() == sample_to_cpal(format.sample)
                && (r.min_sample_rate()..=r.max_sample_rate()).contains(&format.rate)
        })
        .map(|r| *r.buffer_size())
}

/// What both streams' cpal error callbacks do: an xrun (ALSA lost or ran
/// out of samples and recovers by itself) is counted; anything else is kept
/// (the first one only), marks the stream failed and wakes its owner thread.
/// It runs on the audio thread, so it only `try_lock`s and never waits.
pub(super) fn on_stream_error(
    e: cpal::Error,
    xruns: &std::sync::atomic::AtomicU64,
    slot: &std::sync::Mutex<Option<cpal::Error>>,
    failed: &std::sync::atomic::AtomicBool,
    owner: &std::thread::Thread,
) {
    use std::sync::atomic::Ordering;
    if e.kind() == cpal::ErrorKind::Xrun {
        xruns.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Ok(mut first) = slot.try_lock()
        && first.is_none()
    {
        *first = Some(e);
    }
    failed.store(true, Ordering::Release);
    owner.unpark();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ch: u16, min: u32, max: u32, f: SampleFormat) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(ch, min, max, SupportedBufferSize::Unknown, f)
    }

    #[test]
    fn prefers_16k_mono_i16_when_offered() {
        let r = [
            range(2, 48_000, 48_000, SampleFormat::F32),
            range(1, 8_000, 96_000, SampleFormat::F32),
            range(1, 8_000, 96_000, SampleFormat::I16),
            range(2, 8_000, 96_000, SampleFormat::I16),
        ];
        let f = choose_capture_format(&r).expect("a format");
        assert_eq!(
            f,
            StreamFormat {
                rate: 16_000,
                channels: 1,
                sample: SampleKind::I16
            }
        );
    }

    #[test]
    fn usb_mic_48k_stereo_f32_is_accepted() {
        let r = [
            range(2, 48_000, 48_000, SampleFormat::F32),
            range(2, 44_100, 44_100, SampleFormat::I32),
            range(2, 48_000, 48_000, SampleFormat::U8),
        ];
        let f = choose_capture_format(&r).expect("a format");
        assert_eq!(f.rate, 44_100);
        let r = [range(2, 48_000, 48_000, SampleFormat::F32)];
        let f = choose_capture_format(&r).expect("a format");
        assert_eq!((f.rate, f.channels, f.sample), (48_000, 2, SampleKind::F32));
    }

    #[test]
    fn rates_below_16k_only_as_last_resort() {
        let r = [
            range(1, 8_000, 8_000, SampleFormat::I16),
            range(2, 96_000, 96_000, SampleFormat::F32),
        ];
        assert_eq!(choose_capture_format(&r).map(|f| f.rate), Some(96_000));
        let r = [range(1, 8_000, 8_000, SampleFormat::I16)];
        assert_eq!(choose_capture_format(&r).map(|f| f.rate), Some(8_000));
    }

    #[test]
    fn unusable_formats_give_none() {
        let r = [range(2, 48_000, 48_000, SampleFormat::U8)];
        assert_eq!(choose_capture_format(&r), None);
        assert_eq!(choose_capture_format(&[]), None);
    }

    #[test]
    fn fixed_buffer_is_10ms_within_the_device_range() {
        let f = StreamFormat {
            rate: 48_000,
            channels: 2,
            sample: SampleKind::F32,
        };
        let c = stream_config(f, None, 10);
        assert_eq!(c.buffer_size, BufferSize::Fixed(480));
        let c = stream_config(
            f,
            Some(&SupportedBufferSize::Range {
                min: 1024,
                max: 4096,
            }),
            10,
        );
        assert_eq!(c.buffer_size, BufferSize::Fixed(1024));
        let c = stream_config(f, None, 20);
        assert_eq!(c.buffer_size, BufferSize::Fixed(960));
    }
}
