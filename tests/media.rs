//! AudioPlayer media: avsd's stream fetcher (`avsd::media`) and decoder
//! (`avsd::audio::media_decode`) against avs-sim's media server
//! (`avs_sim::media`), both in this process, with the files
//! `scripts/make-media` makes. Decoded audio is compared with ffmpeg's
//! decode of the same file by correlation.

#[path = "media_rig.rs"]
mod media_rig;

use std::sync::Arc;
use std::time::Duration;

use avsd::media::{self, AudioItem, Limits, MediaErrorKind, MediaEvent, MediaItem, MediaStream};
use media_rig::{RATE, Server, correlation, media_dir, reference};
use support::sim::within;

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

/// The real binary: `avs-sim avs --media-dir` prints its media address
/// after the other two and serves the files over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_media_with_media_dir() {
    use tokio::io::AsyncBufReadExt;
    let f = support::sim::files();
    let mut child = tokio::process::Command::new(support::bin("avs-sim"))
        .arg("avs")
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&f.cert_file)
        .arg("--tls-key")
        .arg(&f.key_file)
        .arg("--token-key-file")
        .arg(&f.token_key_file)
        .arg("--media-dir")
        .arg(media_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("avs-sim starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("its stdout")).lines();
    let mut printed = Vec::new();
    for _ in 0..3 {
        let line = within("the address lines", lines.next_line()).await;
        printed.push(line.expect("stdout").expect("three lines"));
    }
    let base = printed[2]
        .strip_prefix("avs-sim avs media on ")
        .unwrap_or_else(|| panic!("no media line: {printed:?}"))
        .to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let client = media::MediaClient::new(Some(&f.ca_file)).expect("a client");
    let stream = media::open(
        &format!("{base}/media/tone.flac"),
        0,
        &client,
        Limits::default(),
    );
    let (bytes, events) = drain(stream).await;
    assert_eq!(events, [MediaEvent::Finished]);
    assert_eq!(bytes, file("tone.flac"));
    let _ = child.kill().await;

    // A folder without the media: refused at start, naming the fix.
    let empty = tempfile::tempdir().expect("a temp dir");
    let out = tokio::process::Command::new(support::bin("avs-sim"))
        .arg("avs")
        .arg("--tls-cert")
        .arg(&f.cert_file)
        .arg("--tls-key")
        .arg(&f.key_file)
        .arg("--token-key-file")
        .arg(&f.token_key_file)
        .arg("--media-dir")
        .arg(empty.path())
        .output()
        .await
        .expect("avs-sim runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/make-media"), "{err}");
}

/// `offset_ms` starts a stream that far in: a file by dropping decoded
/// audio, an HLS VOD playlist by skipping whole segments unfetched first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_starts_the_stream_that_far_in() {
    let server = Server::start().await;
    for (path, file) in [
        ("/media/tone.mp3", "tone.mp3"),
        ("/hls/vod.m3u8", "tone.aac"),
    ] {
        let url = format!("{}{path}", server.base);
        let stream = media::open(&url, 2500, &server.client, Limits::default());
        let (pcm, events) = decode(stream).await;
        assert_eq!(events, [MediaEvent::Finished], "{path}");
        let want = reference(file);
        let skipped = &want[(RATE as usize * 2500 / 1000)..];
        let c = correlation(&pcm, skipped);
        assert!(c > 0.9, "{path} from 2.5 s: correlation {c:.3}");
        let (a, b) = (pcm.len() as f64, skipped.len() as f64);
        assert!(
            (a - b).abs() < 0.1 * b,
            "{path}: {a} samples, want about {b}"
        );
    }
    let requests = server.requests().await;
    assert!(
        !requests
            .iter()
            .any(|(p, _)| p == "/hls/seg/0.aac" || p == "/hls/seg/1.aac"),
        "the first two segments were fetched: {requests:?}"
    );
    assert!(
        requests.iter().any(|(p, _)| p == "/hls/seg/2.aac"),
        "{requests:?}"
    );
}
