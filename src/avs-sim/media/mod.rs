//! `avs-sim avs --media-dir DIR`: an HTTPS media server on loopback for
//! AudioPlayer tests, serving what `scripts/make-media DIR` made (read at
//! start) and the troubles real streams have. HTTP/1.1 over TLS with the
//! stand-in's certificate. Routes (GET):
//!
//! - `/media/NAME`: a file (`tone.mp3`, `tone.aac`, `tone.m4a`, `tail.m4a`,
//!   `tone.ogg`, `tone.flac`, `radio.mp3`, `tone.wav`), with
//!   `Accept-Ranges: bytes` and `Range: bytes=N-` / `N-M` answered 206.
//! - `/redirect/NAME`: 302 to `/media/NAME`.
//! - `/drop/NAME?at=N`: without a Range, the full headers, N bytes, then
//!   (300 ms later) the connection is broken; with one, as `/media/NAME` (so a client that
//!   resumes gets the rest).
//! - `/stall/NAME?after=N&ms=M`: N bytes, nothing for M ms, then the rest.
//! - `/icy[?metaint=N][&rate=BYTES_PER_S][&title_every=BLOCKS]`: an endless
//!   stream of `radio.mp3` looped, paced (default 16 000 B/s, 128 kb/s);
//!   with `Icy-MetaData: 1`, `icy-metaint` (default 8192) and a
//!   `StreamTitle='Artist K - Song K';` that changes every `title_every`
//!   blocks (default 2).
//! - `/playlist.m3u?to=P1,P2` and `/playlist.pls?to=…`: the paths as
//!   absolute URLs (default `/media/tone.mp3`).
//! - `/hls/vod.m3u8`, `/hls/live.m3u8` (grows with time), `/hls/master.m3u8`,
//!   their segments `/hls/seg/N.aac` and `/hls/live/N.aac` (ADTS cut from
//!   `tone.aac`, each with its ID3 timestamp).
//! - The same in MPEG-TS under `/hls/ts-aac/` (ADTS AAC) and `/hls/ts-mp3/`
//!   (MPEG audio): `vod.m3u8`, `live.m3u8`, `seg/N.ts`, `live/N.ts`
//!   (`video/mp2t`, the segments ffmpeg's HLS muxer made).
//! - `/stats`: `{requests: [{path, query, range, icy}], drops, stalls}`;
//!   `POST /reset` clears it. Anything else: 404.

mod body;
mod hls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HOST, LOCATION, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use body::MediaBody;
use hls::Hls;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// Requests remembered in `/stats`.
const MAX_LOGGED: usize = 1000;

/// The files `scripts/make-media` makes.
pub const FILES: &[&str] = &[
    "tone.mp3",
    "tone.aac",
    "tone.m4a",
    "tail.m4a",
    "tone.ogg",
    "tone.flac",
    "radio.mp3",
    "tone.wav",
];

/// The MPEG-TS HLS folders `scripts/make-media` makes (`vod.m3u8` and
/// its `N.ts` segments in each).
pub const TS_DIRS: &[&str] = &["ts-aac", "ts-mp3"];

/// Whether `dir` holds everything `scripts/make-media` makes.
pub fn complete(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
        && TS_DIRS
            .iter()
            .all(|d| dir.join(d).join("vod.m3u8").is_file())
}

/// What the media server serves.
pub struct Media {
    files: HashMap<String, Bytes>,
    hls: Hls,
    /// MPEG-TS HLS of ADTS AAC and of MP3 (`scripts/make-media`'s
    /// `ts-aac/` and `ts-mp3/`).
    ts_aac: Hls,
    ts_mp3: Hls,
    stats: Mutex<Value>,
}

impl Media {
    /// Reads the files of `dir` (made by `scripts/make-media DIR`).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut files = HashMap::new();
        for name in FILES {
            let path: PathBuf = dir.join(name);
            let data = std::fs::read(&path).map_err(|e| {
                format!(
                    "{}: {e}; make the media first with `scripts/make-media {}`",
                    path.display(),
                    dir.display()
                )
            })?;
            files.insert((*name).to_string(), Bytes::from(data));
        }
        let hls = Hls::new(&files["tone.aac"], 1.0).map_err(|e| format!("tone.aac: {e}"))?;
        let ts = |sub: &str| {
            Hls::from_ts(&dir.join(sub)).map_err(|e| {
                format!(
                    "{e}; make the media again with `scripts/make-media {}`",
                    dir.display()
                )
            })
        };
        Ok(Self {
            files,
            hls,
            ts_aac: ts(TS_DIRS[0])?,
            ts_mp3: ts(TS_DIRS[1])?,
            stats: Mutex::new(empty_stats()),
        })
    }
}

fn empty_stats() -> Value {
    json!({"requests": [], "drops": 0, "stalls": 0})
}

/// Serves `media` on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    media: Media,
    shutdown: CancellationToken,
) {
    let mut tls = Arc::unwrap_or_clone(tls);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let media = Arc::new(media);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tcp, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "media: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, media, shutdown) = (acceptor.clone(), media.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = service_fn(move |req| {
                let media = media.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&media, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
    tracker.close();
}

fn plain(status: StatusCode, text: &str) -> Response<MediaBody> {
    let mut r = Response::new(MediaBody::full(text.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("a valid header"),
    );
    r
}

fn typed(status: StatusCode, mime: &str, body: MediaBody) -> Response<MediaBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = mime.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn mime_of(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("mp3") => "audio/mpeg",
        Some("aac") => "audio/aac",
        Some("m4a") => "audio/mp4",
        Some("ogg") => "audio/ogg",
        Some("flac") => "audio/flac",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn num(q: &HashMap<String, String>, key: &str, default: u64) -> u64 {
    q.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn route(media: &Arc<Media>, req: Request<Incoming>) -> Response<MediaBody> {
    let path = req.uri().path().to_string();
    let range = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let icy = req
        .headers()
        .get("icy-metadata")
        .and_then(|v| v.to_str().ok())
        == Some("1");
    if path != "/stats" {
        let mut stats = media.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = stats["requests"].as_array_mut()
            && list.len() < MAX_LOGGED
        {
            list.push(
                json!({"path": path, "query": req.uri().query(), "range": range, "icy": icy}),
            );
        }
    }
    let q = query(&req);
    match (req.method(), path.as_str()) {
        (&Method::GET, "/stats") => {
            let stats = media
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            typed(
                StatusCode::OK,
                "application/json",
                MediaBody::full(stats.to_string()),
            )
        }
        (&Method::POST, "/reset") => {
            *media.stats.lock().unwrap_or_else(|e| e.into_inner()) = empty_stats();
            plain(StatusCode::OK, "reset")
        }
        (&Method::GET, _) => get(media, &req, &path, &q, range.as_deref(), icy),
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "GET only"),
    }
}

fn get(
    media: &Arc<Media>,
    req: &Request<Incoming>,
    path: &str,
    q: &HashMap<String, String>,
    range: Option<&str>,
    icy: bool,
) -> Response<MediaBody> {
    let file = |name: &str| media.files.get(name).cloned();
    if let Some(name) = path.strip_prefix("/media/") {
        return match file(name) {
            Some(data) => serve_file(data, mime_of(name), range),
            None => plain(StatusCode::NOT_FOUND, "no such file"),
        };
    }
    if let Some(name) = path.strip_prefix("/redirect/") {
        let mut r = plain(StatusCode::FOUND, "moved");
        if let Ok(v) = format!("/media/{name}").parse() {
            r.headers_mut().insert(LOCATION, v);
        }
        return r;
    }
    if let Some(name) = path.strip_prefix("/drop/") {
        let Some(data) = file(name) else {
            return plain(StatusCode::NOT_FOUND, "no such file");
        };
        if range.is_some() {
            return serve_file(data, mime_of(name), range);
        }
        let at = (num(q, "at", data.len() as u64 / 2) as usize).min(data.len());
        bump(media, "drops");
        let len = data.len();
        let (tx, body) = MediaBody::channel();
        tokio::spawn(async move {
            let _ = tx.send(Ok(data.slice(..at))).await;
            // hyper drops what it has not written yet when a body fails:
            // give the bytes time to leave before the break.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(Err(body::Broken)).await;
        });
        return with_length(typed(StatusCode::OK, mime_of(name), body), len);
    }
    if let Some(name) = path.strip_prefix("/stall/") {
        let Some(data) = file(name) else {
            return plain(StatusCode::NOT_FOUND, "no such file");
        };
        let after = (num(q, "after", 16 * 1024) as usize).min(data.len());
        let pause = Duration::from_millis(num(q, "ms", 3000));
        bump(media, "stalls");
        let len = data.len();
        let (tx, body) = MediaBody::channel();
        tokio::spawn(async move {
            let _ = tx.send(Ok(data.slice(..after))).await;
            tokio::time::sleep(pause).await;
            let _ = tx.send(Ok(data.slice(after..))).await;
        });
        return with_length(typed(StatusCode::OK, mime_of(name), body), len);
    }
    if path == "/icy" {
        return icy_stream(media, q, icy);
    }
    if path == "/playlist.m3u" || path == "/playlist.pls" {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let to = q.get("to").map_or("/media/tone.mp3", String::as_str);
        let urls: Vec<String> = to
            .split(',')
            .map(|p| format!("https://{host}{p}"))
            .collect();
        return if path.ends_with(".m3u") {
            let mut s = "#EXTM3U\n".to_string();
            for u in &urls {
                s.push_str(&format!("#EXTINF:-1,avs-sim\n{u}\n"));
            }
            typed(StatusCode::OK, "audio/x-mpegurl", MediaBody::full(s))
        } else {
            let mut s = "[playlist]\n".to_string();
            for (i, u) in urls.iter().enumerate() {
                s.push_str(&format!(
                    "File{n}={u}\nTitle{n}=avs-sim {n}\nLength{n}=-1\n",
                    n = i + 1
                ));
            }
            s.push_str(&format!("NumberOfEntries={}\nVersion=2\n", urls.len()));
            typed(StatusCode::OK, "audio/x-scpls", MediaBody::full(s))
        };
    }
    let m3u8 = |s: String| {
        typed(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            MediaBody::full(s),
        )
    };
    let (hls, rest) = match (
        path.strip_prefix("/hls/ts-aac/"),
        path.strip_prefix("/hls/ts-mp3/"),
        path.strip_prefix("/hls/"),
    ) {
        (Some(rest), _, _) => (&media.ts_aac, rest),
        (_, Some(rest), _) => (&media.ts_mp3, rest),
        (_, _, Some(rest)) => (&media.hls, rest),
        _ => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    match rest {
        "vod.m3u8" => return m3u8(hls.vod()),
        "live.m3u8" => return m3u8(hls.live()),
        "master.m3u8" => return m3u8(Hls::master()),
        _ => {}
    }
    let number = |s: &str| {
        s.strip_suffix(hls.extension())?
            .strip_suffix('.')?
            .parse::<u64>()
            .ok()
    };
    let segment = rest
        .strip_prefix("seg/")
        .and_then(number)
        .filter(|&n| n < hls.segment_count() as u64)
        .or_else(|| rest.strip_prefix("live/").and_then(number));
    match segment {
        Some(n) => typed(StatusCode::OK, hls.mime(), MediaBody::full(hls.segment(n))),
        None => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

fn bump(media: &Media, key: &str) {
    let mut stats = media.stats.lock().unwrap_or_else(|e| e.into_inner());
    stats[key] = json!(stats[key].as_u64().unwrap_or(0) + 1);
}

fn with_length(mut r: Response<MediaBody>, len: usize) -> Response<MediaBody> {
    r.headers_mut().insert(CONTENT_LENGTH, len.into());
    r.headers_mut()
        .insert(ACCEPT_RANGES, "bytes".parse().expect("a valid header"));
    r
}

/// The whole file, or the part a `Range: bytes=N-[M]` asks for.
fn serve_file(data: Bytes, mime: &str, range: Option<&str>) -> Response<MediaBody> {
    let total = data.len();
    let Some(range) = range else {
        return with_length(typed(StatusCode::OK, mime, MediaBody::full(data)), total);
    };
    let parsed = range.trim().strip_prefix("bytes=").and_then(|r| {
        let (a, b) = r.split_once('-')?;
        let first: usize = a.trim().parse().ok()?;
        let last: usize = if b.trim().is_empty() {
            total.checked_sub(1)?
        } else {
            b.trim().parse().ok()?
        };
        (first <= last && first < total).then_some((first, last.min(total - 1)))
    });
    match parsed {
        Some((first, last)) => {
            let mut r = with_length(
                typed(
                    StatusCode::PARTIAL_CONTENT,
                    mime,
                    MediaBody::full(data.slice(first..=last)),
                ),
                last + 1 - first,
            );
            if let Ok(v) = format!("bytes {first}-{last}/{total}").parse() {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
        None => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "bad range");
            if let Ok(v) = format!("bytes */{total}").parse() {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
    }
}

/// The endless ICY stream, paced, until the client goes.
fn icy_stream(media: &Arc<Media>, q: &HashMap<String, String>, icy: bool) -> Response<MediaBody> {
    let audio = media.files["radio.mp3"].clone();
    let metaint = num(q, "metaint", 8192).clamp(16, 1 << 16) as usize;
    let rate = num(q, "rate", 16_000).clamp(1000, 10_000_000) as usize;
    let every = num(q, "title_every", 2).max(1);
    let (tx, body) = MediaBody::channel();
    tokio::spawn(async move {
        let mut at = 0usize;
        let mut blocks = 0u64;
        // A block of audio every metaint/rate seconds.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(metaint as f64 / rate as f64));
        loop {
            tick.tick().await;
            let mut piece = Vec::with_capacity(metaint + 64);
            while piece.len() < metaint {
                let n = (metaint - piece.len()).min(audio.len() - at);
                piece.extend_from_slice(&audio[at..at + n]);
                at = (at + n) % audio.len();
            }
            if icy {
                if blocks.is_multiple_of(every) {
                    let k = blocks / every;
                    let text = format!("StreamTitle='Artist {k} - Song {k}';StreamUrl='';");
                    let len = text.len().div_ceil(16);
                    piece.push(len as u8);
                    piece.extend_from_slice(text.as_bytes());
                    piece.resize(piece.len() + len * 16 - text.len(), 0);
                } else {
                    piece.push(0);
                }
            }
            blocks += 1;
            if tx.send(Ok(Bytes::from(piece))).await.is_err() {
                return;
            }
        }
    });
    let mut r = typed(StatusCode::OK, "audio/mpeg", body);
    let h = r.headers_mut();
    h.insert("icy-name", "avs-sim radio".parse().expect("a valid header"));
    if icy {
        h.insert("icy-metaint", metaint.into());
    }
    r
}
