//! AudioPlayer with media from the network: `avs-sim avs` serves the files
//! `scripts/make-media` makes (and streams with the troubles real ones
//! have) on its media server, pushes Play directives with their `https://`
//! URLs, and the real avsd fetches, decodes and plays them through real
//! ALSA (a FIFO-backed PCM). The stand-in checks every AudioPlayer event;
//! the FIFO shows the sound. Cases share one avsd where they can, one
//! after the other, each waiting for its own events.

use serde_json::{Value, json};
use support::audio::{rms, s16le};
use support::dialog::{Rig, SPEAKER_10MS, Speaker};

const AUDIO: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

/// Where each file starts playing: the media files are 6 s long, so the
/// cases are short, and the offset is honoured on the way.
const OFFSET_MS: u64 = 4000;

fn play(token: &str, url: &str, offset_ms: u64) -> Value {
    json!({"directive": {
        "header": {"namespace": "AudioPlayer", "name": "Play",
                   "messageId": format!("play-{token}")},
        "payload": {"playBehavior": "REPLACE_ALL",
                    "audioItem": {"audioItemId": token,
                                  "stream": {"url": url, "token": token,
                                             "offsetInMilliseconds": offset_ms}}}
    }})
}

fn stop(token: &str) -> Value {
    json!({"directive": {
        "header": {"namespace": "AudioPlayer", "name": "Stop",
                   "messageId": format!("stop-{token}")},
        "payload": {}
    }})
}

/// The stand-in's AudioPlayer events for `token`.
fn events_for(stats: &Value, token: &str) -> Vec<Value> {
    stats["audio_player"]["events"]
        .as_array()
        .expect("audio_player.events in /stats")
        .iter()
        .filter(|e| e["token"] == token)
        .cloned()
        .collect()
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| {
            e["name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("AudioPlayer.")
        })
        .collect()
}

/// A running avsd with its speaker FIFO, and how many AudioPlayer events
/// of each name the stand-in has seen (to wait for the next one).
struct Bench {
    rig: Rig,
    speaker: Speaker,
}

impl Bench {
    async fn start() -> Bench {
        let rig = Rig::start(AUDIO).await;
        let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
        Bench { rig, speaker }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.rig.avs.media)
    }

    async fn count(&self, name: &str) -> u64 {
        let stats = self.rig.avs.stats().await;
        stats["audio_player"]["events"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|e| e["name"] == format!("AudioPlayer.{name}"))
                .count()
        }) as u64
    }

    /// Waits for one more `name` than there is now, after `act`.
    async fn after(&self, name: &str, act: impl std::future::Future<Output = ()>) -> Value {
        let n = self.count(name).await;
        act.await;
        self.rig
            .avs_wait(&format!("event=AudioPlayer.{name}&count={}", n + 1))
            .await
    }

    /// Plays `path` from `offset_ms` to its end; its events and the RMS
    /// of what the speaker played meanwhile.
    async fn play_through(&self, token: &str, path: &str, offset_ms: u64) -> (Vec<Value>, f32) {
        let from = self.speaker.played().len();
        let url = self.url(path);
        let stats = self
            .after(
                "PlaybackFinished",
                self.rig.avs.push("", play(token, &url, offset_ms)),
            )
            .await;
        let played = self.speaker.played();
        (events_for(&stats, token), rms(&s16le(&played[from..])))
    }

    /// The requests the media server saw for `path`, with their Range.
    async fn media_requests(&self, path: &str) -> Vec<Option<String>> {
        let pem = std::fs::read(&self.rig.world.env.ca_file).expect("the world's CA");
        let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("a client");
        let stats: Value = client
            .get(self.url("/stats"))
            .send()
            .await
            .expect("media /stats")
            .json()
            .await
            .expect("media /stats JSON");
        stats["requests"]
            .as_array()
            .expect("requests in media /stats")
            .iter()
            .filter(|r| r["path"] == path)
            .map(|r| r["range"].as_str().map(str::to_string))
            .collect()
    }

    /// avsd is still connected, and Alexa idle.
    async fn still_well(&self) {
        assert_eq!(self.rig.dialog.connection().await.unwrap(), "connected");
        assert_eq!(self.rig.dialog.state().await.unwrap(), "idle");
        let stats = self.rig.avs.stats().await;
        assert_eq!(
            stats["rejections"],
            json!([]),
            "the stand-in refused nothing"
        );
    }
}

fn offset(event: &Value) -> u64 {
    event["offset_ms"].as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_codec_and_playlist_plays_from_its_offset() {
    let b = Bench::start().await;
    let m3u = "/playlist.m3u?to=/media/tone.mp3";
    let pls = "/playlist.pls?to=/media/tone.ogg";
    for (token, path) in [
        ("mp3", "/media/tone.mp3"),
        ("aac", "/media/tone.aac"),
        ("m4a", "/media/tone.m4a"),
        ("ogg", "/media/tone.ogg"),
        ("flac", "/media/tone.flac"),
        ("m3u", m3u),
        ("pls", pls),
        ("hls", "/hls/vod.m3u8"),
        ("hls-ts", "/hls/ts-aac/vod.m3u8"),
    ] {
        let (events, level) = b.play_through(token, path, OFFSET_MS).await;
        println!("{token}: {:?}, rms {level:.3}", names(&events));
        assert_eq!(
            names(&events),
            [
                "PlaybackStarted",
                "PlaybackNearlyFinished",
                "PlaybackFinished"
            ],
            "{token}"
        );
        assert_eq!(
            offset(&events[0]),
            OFFSET_MS,
            "{token} starts at the offset"
        );
        let end = offset(&events[2]);
        assert!(
            end.abs_diff(6000) <= 300,
            "{token} ends at the file's end, offset + heard ({end} ms)"
        );
        assert!(level > 0.05, "{token} is heard ({level:.3})");
    }
    b.still_well().await;

    // Live HLS never ends: it plays until AVS stops it (MPEG-TS here,
    // radio's usual kind).
    let url = b.url("/hls/ts-mp3/live.m3u8");
    b.after("PlaybackStarted", b.rig.avs.push("", play("live", &url, 0)))
        .await;
    let before = b.speaker.played().len();
    b.speaker.wait_sound(before + 48_000 * 4).await;
    let stats = b
        .after("PlaybackStopped", b.rig.avs.push("", stop("live")))
        .await;
    assert_eq!(
        names(&events_for(&stats, "live")),
        ["PlaybackStarted", "PlaybackStopped"]
    );
    b.still_well().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_stalls_drops_and_metadata() {
    let b = Bench::start().await;

    // Not found: the item fails as an invalid request, nothing plays.
    let url = b.url("/media/missing.mp3");
    let stats = b
        .after("PlaybackFailed", b.rig.avs.push("", play("404", &url, 0)))
        .await;
    let events = events_for(&stats, "404");
    assert_eq!(names(&events), ["PlaybackFailed"]);
    assert_eq!(events[0]["error_type"], "MEDIA_ERROR_INVALID_REQUEST");
    b.still_well().await;

    // A stall longer than the stutter threshold (2 s) but short of giving
    // up: the stutter is reported, and the stream plays to its end.
    let (events, _) = b
        .play_through("stall", "/stall/tone.mp3?after=48000&ms=4500", 0)
        .await;
    println!("stall: {events:?}");
    assert_eq!(
        names(&events),
        [
            "PlaybackStarted",
            "PlaybackStutterStarted",
            "PlaybackStutterFinished",
            "PlaybackNearlyFinished",
            "PlaybackFinished"
        ]
    );
    // 48 000 bytes of a 128 kb/s MP3 are 3 s: the stutter starts when
    // they have played, and nothing plays until it ends.
    let (dry, back) = (offset(&events[1]), offset(&events[2]));
    assert!(
        dry.abs_diff(3000) <= 300,
        "the stutter starts when the audio runs out ({dry} ms)"
    );
    assert!(
        back.abs_diff(dry) <= 100,
        "silent while it stutters ({dry} -> {back} ms)"
    );
    assert!(offset(&events[4]).abs_diff(6000) <= 300, "all of it played");

    // A dropped connection: the rest comes with a Range request, and the
    // whole file plays.
    let (events, level) = b.play_through("drop", "/drop/tone.mp3?at=40000", 0).await;
    println!("drop: {events:?}");
    assert_eq!(
        names(&events),
        [
            "PlaybackStarted",
            "PlaybackNearlyFinished",
            "PlaybackFinished"
        ]
    );
    let end = offset(&events[2]);
    assert!(end.abs_diff(6000) <= 300, "all of it played ({end} ms)");
    assert!(level > 0.05, "heard ({level:.3})");
    let ranges = b.media_requests("/drop/tone.mp3").await;
    println!("drop requests (Range): {ranges:?}");
    assert!(
        ranges.len() >= 2 && ranges[0].is_none() && ranges[1..].iter().all(Option::is_some),
        "one request, then the rest by Range ({ranges:?})"
    );

    // An ICY stream: its StreamTitle is extracted.
    let url = b.url("/icy?metaint=8192&title_every=2");
    let stats = b
        .after(
            "StreamMetadataExtracted",
            b.rig.avs.push("", play("icy", &url, 0)),
        )
        .await;
    let events = events_for(&stats, "icy");
    assert_eq!(
        names(&events),
        ["PlaybackStarted", "StreamMetadataExtracted"]
    );
    let tags = &events[1]["metadata"];
    println!("icy metadata: {tags}");
    assert!(
        tags["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Song ")),
        "{tags}"
    );
    assert!(
        tags["artist"]
            .as_str()
            .is_some_and(|t| t.starts_with("Artist ")),
        "{tags}"
    );
    b.after("PlaybackStopped", b.rig.avs.push("", stop("icy")))
        .await;
    b.still_well().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stalled_for_good_fails_after_its_stutter() {
    let b = Bench::start().await;
    // Stalled past the media module's give-up (20 s): what came plays,
    // then the item fails.
    let url = b.url("/stall/tone.mp3?after=48000&ms=60000");
    let stats = b
        .after("PlaybackFailed", b.rig.avs.push("", play("dead", &url, 0)))
        .await;
    let events = events_for(&stats, "dead");
    println!("dead: {events:?}");
    assert_eq!(
        names(&events),
        [
            "PlaybackStarted",
            "PlaybackStutterStarted",
            "PlaybackFailed"
        ]
    );
    assert_eq!(events[2]["error_type"], "MEDIA_ERROR_SERVICE_UNAVAILABLE");
    b.still_well().await;
}
