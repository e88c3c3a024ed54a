//! HLS from one ADTS file: cut at frame boundaries into segments of about
//! a second, each a packed-audio segment (RFC 8216 §3.4) that starts with
//! its ID3 PRIV timestamp; or from MPEG-TS segments ffmpeg made (the
//! common case for radio). A VOD playlist of them, a live one that grows
//! with time (its segments cycle through the file), and a master playlist.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// Sample rates of the ADTS sampling frequency index.
const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];
/// Live segments listed at once.
const LIVE_WINDOW: u64 = 4;

/// The segments of one ADTS file, or of an MPEG-TS HLS encoding.
pub struct Hls {
    segments: Vec<(Bytes, Duration)>,
    target: u64,
    live_since: std::sync::Mutex<Option<Instant>>,
    /// The segments' extension and type: `aac` (packed audio, each with
    /// its ID3 timestamp) or `ts` (MPEG-TS, as the muxer made them).
    ts: bool,
}

impl Hls {
    /// Cuts `adts` into segments of about `seconds`.
    pub fn new(adts: &[u8], seconds: f64) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut at = 0;
        let mut start = 0;
        let mut samples = 0u64;
        let mut rate = 0u32;
        while at + 7 <= adts.len() {
            let h = &adts[at..];
            if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
                return Err(format!("no ADTS frame at byte {at}"));
            }
            rate = *RATES
                .get(usize::from((h[2] >> 2) & 0x0f))
                .ok_or("bad ADTS sampling frequency index")?;
            let len = (usize::from(h[3] & 0x03) << 11)
                | (usize::from(h[4]) << 3)
                | usize::from(h[5] >> 5);
            if len < 7 || at + len > adts.len() {
                return Err(format!("bad ADTS frame length at byte {at}"));
            }
            at += len;
            samples += 1024;
            if samples as f64 >= seconds * f64::from(rate) || at + 7 > adts.len() {
                let d = Duration::from_secs_f64(samples as f64 / f64::from(rate));
                segments.push((Bytes::copy_from_slice(&adts[start..at]), d));
                start = at;
                samples = 0;
            }
        }
        if segments.is_empty() || rate == 0 {
            return Err("the ADTS file has no frames".into());
        }
        Ok(Self::of(segments, false))
    }

    /// The MPEG-TS segments ffmpeg's HLS muxer wrote into `dir`, in the
    /// order and with the durations of its `vod.m3u8`.
    pub fn from_ts(dir: &std::path::Path) -> Result<Self, String> {
        let list = dir.join("vod.m3u8");
        let text =
            std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
        let mut segments = Vec::new();
        let mut duration = None;
        for line in text.lines().map(str::trim) {
            if let Some(d) = line.strip_prefix("#EXTINF:") {
                let secs: f64 = d
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| format!("{}: bad #EXTINF `{line}`", list.display()))?;
                duration = Some(Duration::from_secs_f64(secs));
            } else if !line.is_empty() && !line.starts_with('#') {
                let d = duration.take().ok_or(format!(
                    "{}: `{line}` has no #EXTINF before it",
                    list.display()
                ))?;
                let path = dir.join(line);
                let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                segments.push((Bytes::from(data), d));
            }
        }
        if segments.is_empty() {
            return Err(format!("{}: no segments", list.display()));
        }
        Ok(Self::of(segments, true))
    }

    fn of(segments: Vec<(Bytes, Duration)>, ts: bool) -> Self {
        let target = segments
            .iter()
            .map(|(_, d)| d.as_secs_f64().round().max(1.0) as u64)
            .max()
            .unwrap_or(1);
        Self {
            segments,
            target,
            live_since: std::sync::Mutex::new(None),
            ts,
        }
    }

    /// The segments' file extension.
    pub fn extension(&self) -> &'static str {
        if self.ts { "ts" } else { "aac" }
    }

    /// The segments' Content-Type.
    pub fn mime(&self) -> &'static str {
        if self.ts { "video/mp2t" } else { "audio/aac" }
    }

    /// How many segments the file makes.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn entry(&self, out: &mut String, n: u64, prefix: &str) {
        let (_, d) = &self.segments[(n % self.segments.len() as u64) as usize];
        out.push_str(&format!(
            "#EXTINF:{:.3},\n{prefix}{n}.{}\n",
            d.as_secs_f64(),
            self.extension()
        ));
    }

    /// The VOD playlist: every segment, then the end.
    pub fn vod(&self) -> String {
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
            self.target
        );
        for n in 0..self.segments.len() as u64 {
            self.entry(&mut s, n, "seg/");
        }
        s.push_str("#EXT-X-ENDLIST\n");
        s
    }

    /// The live playlist: the newest [`LIVE_WINDOW`] segments; one more
    /// each segment's duration since it was first asked for.
    pub fn live(&self) -> String {
        let since = {
            let mut s = self.live_since.lock().unwrap_or_else(|e| e.into_inner());
            *s.get_or_insert_with(Instant::now)
        };
        let per = self.segments[0].1.as_secs_f64().max(0.1);
        let newest = LIVE_WINDOW + (since.elapsed().as_secs_f64() / per) as u64;
        let first = newest - LIVE_WINDOW;
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
            self.target
        );
        for n in first..newest {
            self.entry(&mut s, n, "live/");
        }
        s
    }

    /// A master playlist naming the VOD playlist.
    pub fn master() -> String {
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=96000,CODECS=\"mp4a.40.2\"\nvod.m3u8\n".into()
    }

    /// Segment `n` (cycling), a packed-audio one with its ID3 timestamp
    /// in front.
    pub fn segment(&self, n: u64) -> Bytes {
        let i = (n % self.segments.len() as u64) as usize;
        if self.ts {
            return self.segments[i].0.clone();
        }
        let start: Duration = self.segments[..i].iter().map(|(_, d)| *d).sum();
        let mut out = timestamp_tag((start.as_secs_f64() * 90_000.0) as u64);
        out.extend_from_slice(&self.segments[i].0);
        Bytes::from(out)
    }
}

/// An ID3v2.4 tag with the PRIV frame packed audio starts with: the
/// segment's first sample as a 33-bit MPEG-2 timestamp (90 kHz).
fn timestamp_tag(pts: u64) -> Vec<u8> {
    let owner = b"com.apple.streaming.transportStreamTimestamp\0";
    let mut frame = b"PRIV".to_vec();
    let body = owner.len() + 8;
    frame.extend(synchsafe(body));
    frame.extend([0, 0]);
    frame.extend(owner);
    frame.extend((pts & 0x1_ffff_ffff).to_be_bytes());
    let mut tag = b"ID3\x04\x00\x00".to_vec();
    tag.extend(synchsafe(frame.len()));
    tag.extend(frame);
    tag
}

fn synchsafe(n: usize) -> [u8; 4] {
    [
        (n >> 21) as u8 & 0x7f,
        (n >> 14) as u8 & 0x7f,
        (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]
}
