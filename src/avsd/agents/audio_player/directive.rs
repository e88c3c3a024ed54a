//! The AudioPlayer directives' payloads (AudioPlayer 1.4), parsed once by
//! the agent; the rules AVS documents that serde cannot say are checked in
//! [`Play::check`].

use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// How a Play changes the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlayBehavior {
    /// Stop what plays, clear the queue, play this now.
    ReplaceAll,
    /// Add to the end of the queue.
    Enqueue,
    /// Keep what plays, replace the rest of the queue with this.
    ReplaceEnqueued,
}

/// What the stream does while Alexa listens or speaks (from 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterruptedBehavior {
    /// Keep playing, attenuated.
    #[default]
    Attenuate,
    /// Pause, and carry on afterwards.
    Pause,
}

/// `AudioPlayer.Play`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Play {
    /// How it changes the queue.
    pub play_behavior: PlayBehavior,
    /// What to play.
    pub audio_item: AudioItem,
    /// Duck or pause under the Dialog channel.
    #[serde(default)]
    pub interrupted_behavior: InterruptedBehavior,
}

/// `audioItem`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioItem {
    /// The item's id (for logs).
    #[serde(default)]
    pub audio_item_id: String,
    /// Where and how.
    pub stream: Stream,
    /// Title and artist, where the service gives them.
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

/// `audioItem.stream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stream {
    /// `https://…` or `cid:…` (an attachment of the same message).
    pub url: String,
    /// `AUDIO_MPEG` for attachments; absent for URLs.
    #[serde(default)]
    pub stream_format: Option<String>,
    /// Where to start.
    #[serde(default)]
    pub offset_in_milliseconds: u64,
    /// ISO 8601; a stream not started by then is not played.
    #[serde(default)]
    pub expiry_time: Option<String>,
    /// When to send the progress reports.
    #[serde(default)]
    pub progress_report: Option<ProgressReport>,
    /// Identifies the stream in every event.
    pub token: String,
    /// The token that must be last in the queue for this to be added.
    #[serde(default)]
    pub expected_previous_token: Option<String>,
}

/// `progressReport`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressReport {
    /// ProgressReportDelayElapsed once this much of the stream has played.
    #[serde(default)]
    pub progress_report_delay_in_milliseconds: Option<u64>,
    /// ProgressReportIntervalElapsed each time this much more has played.
    #[serde(default)]
    pub progress_report_interval_in_milliseconds: Option<u64>,
}

/// Title and artist, for D-Bus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The track's title.
    #[serde(default)]
    pub title: Option<String>,
    /// The artist (`subtitle` in skills' metadata).
    #[serde(default, alias = "subtitle")]
    pub artist: Option<String>,
}

impl Play {
    /// The rules serde cannot check; `Err` says which one broke.
    pub fn check(&self) -> Result<(), String> {
        let s = &self.audio_item.stream;
        if s.token.is_empty() {
            return Err("audioItem.stream.token is empty".into());
        }
        if !(s.url.starts_with("https://") || s.url.starts_with("cid:")) {
            return Err(format!(
                "audioItem.stream.url `{}` is neither https:// nor cid:",
                s.url
            ));
        }
        if let Some(e) = &s.expiry_time {
            parse_time(e).ok_or(format!(
                "audioItem.stream.expiryTime `{e}` is not an ISO 8601 time"
            ))?;
        }
        Ok(())
    }

    /// When the stream expires, if it says.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.audio_item
            .stream
            .expiry_time
            .as_deref()
            .and_then(parse_time)
    }
}

/// `AudioPlayer.ClearQueue`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearQueue {
    /// What to clear.
    pub clear_behavior: ClearBehavior,
}

/// How much ClearQueue clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClearBehavior {
    /// The queue, not what plays.
    ClearEnqueued,
    /// The queue, and stop what plays.
    ClearAll,
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM|±HHMM)` to a time; what AVS sends.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = &frac[..digits];
        millis = f.get(..3.min(digits))?.parse::<i64>().ok()? * [100, 10, 1][digits.min(3) - 1];
        rest = &frac[digits..];
    }
    let zone = match rest {
        "Z" | "" => 0,
        z if z.len() >= 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(char::is_ascii_digit).collect();
            if digits.len() != 4 {
                return None;
            }
            let zh: i64 = digits[..2].parse().ok()?;
            let zm: i64 = digits[2..].parse().ok()?;
            sign * (zh * 3600 + zm * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - zone;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_parse() {
        let t = parse_time("1970-01-02T00:00:01Z").expect("parses");
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(86_401));
        let t = parse_time("2026-12-05T08:00:00.250+01:00").expect("parses");
        let u = parse_time("2026-12-05T07:00:00.250Z").expect("parses");
        assert_eq!(t, u);
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("2026-13-05T07:00:00Z").is_none());
    }

    #[test]
    fn play_needs_https_or_cid_and_a_token() {
        let play = |url: &str, token: &str| -> Play {
            serde_json::from_value(serde_json::json!({
                "playBehavior": "ENQUEUE",
                "audioItem": {"audioItemId": "a", "stream": {"url": url, "token": token}}
            }))
            .expect("shape")
        };
        assert!(play("https://x/y.mp3", "t").check().is_ok());
        assert!(play("cid:abc", "t").check().is_ok());
        assert!(play("http://x/y.mp3", "t").check().is_err());
        assert!(play("cid:abc", "").check().is_err());
    }
}
