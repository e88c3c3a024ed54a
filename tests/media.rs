//! AudioPlayer media: avsd's stream fetcher (`avsd::media`) and decoder
//! (`avsd::audio::media_decode`) against avs-sim's media server
//! (`avs_sim::media`), both in this process, with the files
//! `scripts/make-media` makes. Decoded audio is compared with ffmpeg's
//! decode of the same file by correlation.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use avsd::media::{
    self, AudioItem, Limits, MediaClient, MediaErrorKind, MediaEvent, MediaItem, MediaStream,
};
use serde_json::Value;
use support::sim::within;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The rate the tests decode at (low, so correlations are cheap).
const RATE: u32 = 8000;

/// The media files, made once per run under target/ (never committed).
fn media_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = support::repo().join("target/test-media");
        let complete = avs_sim::media::FILES.iter().all(|f| dir.join(f).is_file());
        if !complete {
            let status = Command::new(support::repo().join("scripts/make-media"))
                .arg(&dir)
                .status()
                .expect("scripts/make-media runs");
            assert!(status.success(), "scripts/make-media failed (sox, lame and ffmpeg are needed: scripts/test-audio-deps)");
        }
        dir
    })
}

/// The media server on a free port, with a client that trusts its CA.
struct Server {
    base: String,
    client: MediaClient,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _files: support::sim::Files,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    async fn start() -> Self {
        https::install_provider();
        let files = support::sim::files();
        let tls =
            https::server_config(&files.cert_file, &files.key_file, None).expect("TLS config");
        let media = avs_sim::media::Media::load(media_dir()).expect("the media files");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("https://{}", listener.local_addr().expect("an address"));
        let shutdown = CancellationToken::new();
        tokio::spawn(avs_sim::media::run(listener, tls, media, shutdown.clone()));
        let client = MediaClient::new(Some(&files.ca_file)).expect("the media client");
        let pem = std::fs::read(&files.ca_file).expect("the CA");
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("PEM"))
            .build()
            .expect("a client");
        Self {
            base,
            client,
            http,
            shutdown,
            _files: files,
        }
    }

    fn open(&self, path: &str, limits: Limits) -> MediaStream {
        media::open(&format!("{}{path}", self.base), 0, &self.client, limits)
    }

    async fn stats(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .expect("stats");
        r.json().await.expect("stats JSON")
    }

    /// The paths requested so far, with their Range headers.
    async fn requests(&self) -> Vec<(String, Option<String>)> {
        let stats = self.stats().await;
        stats["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap_or("").to_string(),
                    r["range"].as_str().map(str::to_string),
                )
            })
            .collect()
    }
}

/// Decodes a whole stream to mono PCM at [`RATE`]; its events after.
async fn decode(stream: MediaStream) -> (Vec<f32>, Vec<MediaEvent>) {
    let (audio, mut events) = stream.split();
    let pcm = within(
        "the stream to decode",
        tokio::task::spawn_blocking(move || {
            let mut pcm = Vec::new();
            avsd::audio::media_decode::decode_media_blocking(audio, RATE, |b| {
                pcm.extend_from_slice(b);
                true
            })
            .map(|()| pcm)
        }),
    )
    .await
    .expect("the decoder thread")
    .expect("the stream decodes");
    let mut got = Vec::new();
    while let Some(e) = within("the stream's events", events.recv()).await {
        got.push(e);
    }
    (pcm, got)
}

/// ffmpeg's decode of `file`, mono at [`RATE`].
fn reference(file: &str) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(media_dir().join(file))
        .args(["-f", "f32le", "-ac", "1", "-ar", &RATE.to_string(), "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg failed on {file}");
    out.stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The best normalised correlation of a 2 s window of `got` against
/// `want`, over lags up to 150 ms either way (encoder delays differ).
fn correlation(got: &[f32], want: &[f32]) -> f64 {
    let window = 2 * RATE as usize;
    let start = RATE as usize; // 1 s in: past any start-up of either decoder
    let max_lag = (RATE as usize * 150) / 1000;
    assert!(
        got.len() >= start + window + max_lag,
        "only {} samples decoded",
        got.len()
    );
    let a = &got[start..start + window];
    let energy = |s: &[f32]| s.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
    let ea = energy(a);
    let mut best = 0.0f64;
    for lag in 0..=2 * max_lag {
        let from = start + lag - max_lag;
        let Some(b) = want.get(from..from + window) else {
            continue;
        };
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        best = best.max(dot / (ea * energy(b)).sqrt().max(1e-12));
    }
    best
}

fn assert_like(file: &str, pcm: &[f32], reference_file: &str) {
    let want = reference(reference_file);
    let c = correlation(pcm, &want);
    assert!(
        c > 0.9,
        "{file}: correlation {c:.3} with ffmpeg's decode of {reference_file}"
    );
    let (a, b) = (pcm.len() as f64, want.len() as f64);
    assert!(
        (a - b).abs() / b < 0.1,
        "{file}: {a} samples decoded, ffmpeg has {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_decodes_like_ffmpeg() {
    let server = Server::start().await;
    for file in ["tone.mp3", "tone.aac", "tone.m4a", "tone.ogg", "tone.flac"] {
        let (pcm, events) = decode(server.open(&format!("/media/{file}"), Limits::default())).await;
        assert_eq!(events, [MediaEvent::Finished], "{file}");
        assert_like(file, &pcm, file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp4_with_its_moov_at_the_end_is_read_with_ranges() {
    let server = Server::start().await;
    let (pcm, events) = decode(server.open("/media/tail.m4a", Limits::default())).await;
    assert_eq!(events, [MediaEvent::Finished]);
    assert_like("tail.m4a", &pcm, "tail.m4a");
    // The moov was fetched from its place, then the audio before it.
    let requests = server.requests().await;
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(
        requests.iter().all(|(p, _)| p == "/media/tail.m4a"),
        "{requests:?}"
    );
    assert!(
        requests.iter().filter(|(_, r)| r.is_some()).count() >= 2,
        "no Range requests: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_and_redirects_resolve_to_their_media() {
    let server = Server::start().await;
    // M3U: its first entry is a 404, the next one plays.
    let cases = [
        ("/playlist.m3u?to=/missing.mp3,/media/tone.mp3", "tone.mp3"),
        ("/playlist.pls?to=/redirect/tone.ogg", "tone.ogg"),
        ("/redirect/tone.flac", "tone.flac"),
        ("/hls/vod.m3u8", "tone.aac"),
        ("/hls/master.m3u8", "tone.aac"),
    ];
    for (path, file) in cases {
        let (pcm, events) = decode(server.open(path, Limits::default())).await;
        assert_eq!(events, [MediaEvent::Finished], "{path}");
        assert_like(path, &pcm, file);
    }
    let requests = server.requests().await;
    for path in [
        "/missing.mp3",
        "/media/tone.mp3",
        "/media/tone.ogg",
        "/hls/seg/0.aac",
        "/hls/seg/5.aac",
    ] {
        assert!(
            requests.iter().any(|(p, _)| p == path),
            "{path} was not requested: {requests:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_hls_playlist_is_reloaded_and_followed() {
    let server = Server::start().await;
    let (audio, _events) = server.open("/hls/live.m3u8", Limits::default()).split();
    // Six seconds of audio: more than the four segments first listed, so
    // the playlist had to be reloaded and new segments fetched.
    let want = 6 * RATE as usize;
    let pcm = within(
        "six seconds of the live stream",
        tokio::task::spawn_blocking(move || {
            let mut pcm = Vec::new();
            avsd::audio::media_decode::decode_media_blocking(audio, RATE, |b| {
                pcm.extend_from_slice(b);
                pcm.len() < want
            })
            .map(|()| pcm)
        }),
    )
    .await
    .expect("the decoder thread")
    .expect("the live stream decodes");
    assert!(pcm.len() >= want);
    let rms = (pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 0.05, "the live stream is silent (rms {rms})");
    let requests = server.requests().await;
    let reloads = requests
        .iter()
        .filter(|(p, _)| p == "/hls/live.m3u8")
        .count();
    let newest = requests
        .iter()
        .filter_map(|(p, _)| {
            p.strip_prefix("/hls/live/")?
                .strip_suffix(".aac")?
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(
        reloads >= 2,
        "the live playlist was not reloaded: {requests:?}"
    );
    assert!(
        newest >= Some(4),
        "no segment beyond the first playlist was fetched: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_fails_as_an_invalid_request() {
    let server = Server::start().await;
    let (pcm, events) = decode(server.open("/media/nothing.mp3", Limits::default())).await;
    assert!(pcm.is_empty());
    match events.as_slice() {
        [MediaEvent::Failed(MediaErrorKind::InvalidRequest, message)] => {
            assert!(message.contains("404"), "{message}");
        }
        other => panic!("a 404 gave {other:?}"),
    }
    let (_, events) = decode(media::open(
        "ftp://example.invalid/a.mp3",
        0,
        &server.client,
        Limits::default(),
    ))
    .await;
    assert!(
        matches!(
            events.as_slice(),
            [MediaEvent::Failed(MediaErrorKind::InvalidRequest, _)]
        ),
        "{events:?}"
    );
}

/// Every item of a stream: its audio bytes joined, and its events.
async fn drain(mut stream: MediaStream) -> (Vec<u8>, Vec<MediaEvent>) {
    let mut bytes = Vec::new();
    let mut events = Vec::new();
    while let Some(item) = within("the stream's next item", stream.next()).await {
        match item {
            MediaItem::Audio(AudioItem::Bytes(b)) => bytes.extend_from_slice(&b),
            MediaItem::Audio(AudioItem::Format(_)) => {}
            MediaItem::Audio(AudioItem::Seeked(p)) => panic!("nobody asked for a seek to {p}"),
            MediaItem::Event(e) => events.push(e),
        }
    }
    (bytes, events)
}

fn file(name: &str) -> Vec<u8> {
    std::fs::read(media_dir().join(name)).expect("a media file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_stutters_then_recovers_or_fails() {
    let server = Server::start().await;
    let limits = Limits {
        stall: Duration::from_millis(300),
        give_up: Duration::from_secs(10),
        ..Limits::default()
    };
    let (bytes, events) = drain(server.open("/stall/tone.mp3?after=20000&ms=1500", limits)).await;
    assert_eq!(bytes, file("tone.mp3"), "the audio around the stall");
    assert_eq!(
        events,
        [
            MediaEvent::StutterStarted,
            MediaEvent::StutterFinished,
            MediaEvent::Finished
        ]
    );
    let limits = Limits {
        stall: Duration::from_millis(300),
        give_up: Duration::from_millis(1200),
        ..Limits::default()
    };
    let (bytes, events) = drain(server.open("/stall/tone.mp3?after=20000&ms=60000", limits)).await;
    assert_eq!(bytes.len(), 20000);
    match events.as_slice() {
        [
            MediaEvent::StutterStarted,
            MediaEvent::Failed(MediaErrorKind::ServiceUnavailable, m),
        ] => {
            assert!(m.contains("stalled"), "{m}");
        }
        other => panic!("a long stall gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_with_a_range() {
    let server = Server::start().await;
    let stream = server.open("/drop/tone.mp3?at=30000", Limits::default());
    let counters = stream.counters();
    let (bytes, events) = drain(stream).await;
    assert_eq!(events, [MediaEvent::Finished]);
    assert_eq!(bytes, file("tone.mp3"), "the audio across the reconnect");
    assert_eq!(
        counters
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let requests = server.requests().await;
    assert_eq!(
        requests,
        [
            ("/drop/tone.mp3".to_string(), None),
            (
                "/drop/tone.mp3".to_string(),
                Some("bytes=30000-".to_string())
            )
        ]
    );
    // And a resumed file decodes as the whole one.
    let (pcm, events) = decode(server.open("/drop/tone.ogg?at=10000", Limits::default())).await;
    assert_eq!(events, [MediaEvent::Finished]);
    assert_like("tone.ogg, resumed", &pcm, "tone.ogg");
    let requests = server.requests().await;
    assert!(
        requests.contains(&(
            "/drop/tone.ogg".to_string(),
            Some("bytes=10000-".to_string())
        )),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icy_titles_are_reported_and_kept_out_of_the_audio() {
    let server = Server::start().await;
    let mut stream = server.open(
        "/icy?metaint=4000&rate=200000&title_every=2",
        Limits::default(),
    );
    let mut bytes = Vec::new();
    let mut titles = Vec::new();
    while titles.len() < 3 {
        match within("ICY metadata", stream.next()).await {
            Some(MediaItem::Audio(AudioItem::Bytes(b))) => bytes.extend_from_slice(&b),
            Some(MediaItem::Event(MediaEvent::Metadata { title, artist })) => {
                titles.push((title, artist))
            }
            Some(other) => assert!(
                matches!(other, MediaItem::Audio(AudioItem::Format(_))),
                "{other:?}"
            ),
            None => panic!("the endless stream ended"),
        }
    }
    let want: Vec<(String, Option<String>)> = (0..3)
        .map(|k| (format!("Song {k}"), Some(format!("Artist {k}"))))
        .collect();
    assert_eq!(titles, want);
    // The audio is radio.mp3 looped, byte for byte: no metadata left in it.
    let radio = file("radio.mp3");
    assert!(bytes.len() > 4 * 4000);
    let mismatch = bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| b != radio[i % radio.len()]);
    assert_eq!(mismatch, None, "the audio differs from radio.mp3");
    let requests = server.stats().await;
    assert_eq!(
        requests["requests"][0]["icy"], true,
        "Icy-MetaData: 1 was not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_stream_is_read_with_bounded_memory() {
    let server = Server::start().await;
    let limits = Limits {
        queue: 8,
        ..Limits::default()
    };
    let bound = 8 * media::MAX_PIECE;
    let mut stream = server.open("/icy?rate=4000000", limits);
    let counters: Arc<media::Counters> = stream.counters();
    let load = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
    // Nobody reads: the fetch fills the queue (8 pieces, their size as
    // the network chunks come) and then waits.
    within("the queue to fill", async {
        while load(&counters.buffered) < bound / 8 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut read = 0usize;
    while read < 64 * bound {
        match within("the endless stream", stream.next()).await {
            Some(MediaItem::Audio(AudioItem::Bytes(b))) => read += b.len(),
            Some(
                MediaItem::Audio(AudioItem::Format(_))
                | MediaItem::Event(MediaEvent::Metadata { .. }),
            ) => {}
            other => panic!("the endless stream gave {other:?}"),
        }
        assert!(
            load(&counters.buffered) <= bound,
            "{} bytes buffered",
            load(&counters.buffered)
        );
    }
    let peak = load(&counters.peak_buffered);
    assert!(
        peak <= bound,
        "{peak} bytes were buffered at once, more than {bound}"
    );
}
