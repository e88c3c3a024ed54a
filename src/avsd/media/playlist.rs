//! Playlists: M3U, PLS and HLS (RFC 8216) parsed into the URLs they hold.
//! Pure functions; `resolve.rs` fetches them and follows what they say.

use std::time::Duration;

use url::Url;

/// What a playlist holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// An M3U or PLS list of streams, tried in order.
    Entries(Vec<Url>),
    /// An HLS multivariant (master) playlist: its variants' playlists and
    /// their `BANDWIDTH`.
    Variants(Vec<(Url, u64)>),
    /// An HLS media playlist.
    Media(MediaPlaylist),
}

/// An HLS media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `#EXT-X-TARGETDURATION`.
    pub target_duration: Duration,
    /// Its segments, each with its media sequence number.
    pub segments: Vec<Segment>,
    /// `#EXT-X-ENDLIST`: no segment will be added (VOD, or a live event
    /// that ended).
    pub ended: bool,
}

/// One HLS media segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Where it is.
    pub url: Url,
    /// Its `#EXTINF` duration.
    pub duration: Duration,
    /// Its media sequence number.
    pub sequence: u64,
}

/// Whether a response is a playlist, from its type, its URL and its first
/// bytes (servers label playlists `text/plain` or not at all).
pub fn is_playlist(mime: Option<&str>, url: &Url, head: &[u8]) -> bool {
    let by_type = matches!(
        mime,
        Some(
            "audio/x-mpegurl"
                | "audio/mpegurl"
                | "application/vnd.apple.mpegurl"
                | "application/x-mpegurl"
                | "audio/x-scpls"
                | "audio/scpls"
        )
    );
    let ext = extension(url);
    // A name counts only where the type says nothing: a server that calls
    // it audio knows better than its URL.
    let untyped = match mime {
        None => true,
        Some(m) => m.starts_with("text/") || m == "application/octet-stream",
    };
    let by_name = untyped && matches!(ext.as_deref(), Some("m3u" | "m3u8" | "pls"));
    let head = String::from_utf8_lossy(&head[..head.len().min(64)]).to_ascii_lowercase();
    let by_content = {
        let h = head.trim_start_matches('\u{feff}').trim_start();
        h.starts_with("#extm3u") || h.starts_with("[playlist]")
    };
    by_type || by_name || by_content
}

/// The URL path's extension, lower case.
pub fn extension(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let (_, ext) = last.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
}

/// Parses `text`, fetched from `base` (against which relative URLs are
/// resolved). At most `max_entries` entries or segments are kept.
pub fn parse(text: &str, base: &Url, max_entries: usize) -> Result<Playlist, String> {
    let text = text.trim_start_matches('\u{feff}');
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        Some(l) if l.eq_ignore_ascii_case("[playlist]") => pls(text, base, max_entries),
        Some(_) if text.contains("#EXT-X-") => hls(text, base, max_entries),
        Some(_) => m3u(text, base, max_entries),
        None => Err("the playlist is empty".into()),
    }
}

fn join(base: &Url, reference: &str) -> Result<Url, String> {
    let url = base
        .join(reference)
        .map_err(|e| format!("the playlist entry `{reference}` is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "the playlist entry `{reference}` is a {other}: URL; only http and https are fetched"
        )),
    }
}

fn entries(urls: Vec<Url>) -> Result<Playlist, String> {
    if urls.is_empty() {
        return Err("the playlist names no stream".into());
    }
    Ok(Playlist::Entries(urls))
}

fn m3u(text: &str, base: &Url, max: usize) -> Result<Playlist, String> {
    let urls = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(max)
        .map(|l| join(base, l))
        .collect::<Result<Vec<_>, _>>()?;
    entries(urls)
}

fn pls(text: &str, base: &Url, max: usize) -> Result<Playlist, String> {
    // File1=…, File2=…: in the order of their numbers, not of the lines.
    let mut files: Vec<(u32, Url)> = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if let Some(n) = key.strip_prefix("file")
            && let Ok(n) = n.parse::<u32>()
            && files.len() < max
        {
            files.push((n, join(base, value.trim())?));
        }
    }
    files.sort_by_key(|(n, _)| *n);
    entries(files.into_iter().map(|(_, u)| u).collect())
}

/// The value of `NAME=` in an attribute list (`BANDWIDTH=128000,…`).
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

fn hls(text: &str, base: &Url, max: usize) -> Result<Playlist, String> {
    let mut target = None;
    let mut sequence = 0u64;
    let mut ended = false;
    let mut duration = None;
    let mut bandwidth = None;
    let mut segments = Vec::new();
    let mut variants = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            let secs: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("bad #EXT-X-TARGETDURATION `{v}`"))?;
            target = Some(Duration::from_secs(secs.max(1)));
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = v
                .trim()
                .parse()
                .map_err(|_| format!("bad #EXT-X-MEDIA-SEQUENCE `{v}`"))?;
        } else if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let secs = v.split(',').next().unwrap_or("").trim();
            let secs: f64 = secs
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("bad #EXTINF `{v}`"))?;
            duration = Some(Duration::from_secs_f64(secs.min(86_400.0)));
        } else if let Some(v) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            bandwidth = Some(
                attribute(v, "BANDWIDTH")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0),
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-KEY:") {
            if attribute(v, "METHOD") != Some("NONE") {
                return Err(
                    "the HLS stream is encrypted (#EXT-X-KEY); avsd plays clear streams only"
                        .into(),
                );
            }
        } else if line.starts_with("#EXT-X-MAP:") {
            return Err("the HLS stream has fragmented-MP4 segments (#EXT-X-MAP), which avsd does not play; offer packed audio (ADTS or MP3) segments".into());
        } else if line.starts_with('#') {
            continue;
        } else if let Some(bw) = bandwidth.take() {
            if variants.len() < max {
                variants.push((join(base, line)?, bw));
            }
        } else if let Some(d) = duration.take() {
            if segments.len() < max {
                segments.push(Segment {
                    url: join(base, line)?,
                    duration: d,
                    sequence: sequence + segments.len() as u64,
                });
            }
        } else {
            return Err(format!("the HLS URI `{line}` has no #EXTINF before it"));
        }
    }
    if !variants.is_empty() {
        return Ok(Playlist::Variants(variants));
    }
    let target_duration = target.ok_or("the HLS media playlist has no #EXT-X-TARGETDURATION")?;
    Ok(Playlist::Media(MediaPlaylist {
        target_duration,
        segments,
        ended,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://radio.example/dir/list.m3u8?x=1").unwrap()
    }

    #[test]
    fn m3u_and_pls_resolve_their_entries() {
        let m = parse(
            "#EXTM3U\n#EXTINF:-1,Radio\nstream.mp3\n\nhttps://b.example/s\n",
            &base(),
            10,
        );
        assert_eq!(
            m,
            Ok(Playlist::Entries(vec![
                Url::parse("https://radio.example/dir/stream.mp3").unwrap(),
                Url::parse("https://b.example/s").unwrap(),
            ]))
        );
        let p = "[playlist]\nNumberOfEntries=2\nFile2=/two.aac\nTitle1=One\nFile1=https://a.example/one\nVersion=2\n";
        assert_eq!(
            parse(p, &base(), 10),
            Ok(Playlist::Entries(vec![
                Url::parse("https://a.example/one").unwrap(),
                Url::parse("https://radio.example/two.aac").unwrap(),
            ]))
        );
        assert!(parse("file:///etc/passwd\n", &base(), 10).is_err());
        assert!(parse("\n\n", &base(), 10).is_err());
    }

    #[test]
    fn hls_media_and_master_playlists() {
        let live = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2.0,\nseg41.aac\n#EXTINF:1.5,\nseg42.aac\n";
        let Ok(Playlist::Media(m)) = parse(live, &base(), 10) else {
            panic!("not a media playlist");
        };
        assert_eq!(m.target_duration, Duration::from_secs(2));
        assert!(!m.ended);
        assert_eq!(m.segments.len(), 2);
        assert_eq!(m.segments[1].sequence, 42);
        assert_eq!(m.segments[1].duration, Duration::from_millis(1500));
        assert_eq!(
            m.segments[0].url.as_str(),
            "https://radio.example/dir/seg41.aac"
        );
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=96000,CODECS=\"mp4a.40.2\"\nlow/index.m3u8\n#EXT-X-STREAM-INF:CODECS=\"mp4a.40.2,x\",BANDWIDTH=192000\nhigh/index.m3u8\n";
        let Ok(Playlist::Variants(v)) = parse(master, &base(), 10) else {
            panic!("not a master playlist");
        };
        assert_eq!(v[0].1, 96_000);
        assert_eq!(v[1].1, 192_000);
        assert!(
            parse(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n",
                &base(),
                10
            )
            .is_err()
        );
    }

    #[test]
    fn playlists_are_recognised() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(is_playlist(Some("audio/x-scpls"), &u("https://a/x"), b""));
        assert!(is_playlist(None, &u("https://a/x.M3U8"), b""));
        assert!(is_playlist(
            Some("text/plain"),
            &u("https://a/x"),
            b"\n#EXTM3U\n"
        ));
        assert!(!is_playlist(
            Some("audio/mpeg"),
            &u("https://a/x.mp3"),
            b"ID3\x04"
        ));
        assert!(!is_playlist(
            Some("audio/mpeg"),
            &u("https://a/x.m3u"),
            b"\xff\xfb"
        ));
        assert!(is_playlist(
            Some("text/plain"),
            &u("https://a/x.m3u"),
            b"https://b/s\n"
        ));
    }
}
