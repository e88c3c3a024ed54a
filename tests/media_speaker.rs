//! AudioPlayer streams through the real speaker: `Speaker::play_media`
//! decodes what `avsd::media` fetches from avs-sim's media server and plays
//! it through ALSA (the `spk` FIFO of tests/support/audio.rs); what ALSA
//! was given correlates with ffmpeg's decode of the same file (or HLS
//! playlist: packed ADTS and MPEG-TS of AAC and of MP3).

#[path = "media_rig.rs"]
mod media_rig;

use std::path::Path;
use std::time::Duration;

use avsd::audio::focus::{Backgrounded, Channel};
use avsd::audio::{Activity, PlaybackConfig, Player, PlayerEvent, Speaker};
use avsd::media::{Limits, MediaEvent};
use media_rig::{RATE, Server, correlation, reference};
use support::alsa_test;
use support::audio::{FifoReader, decimate, f32le, runtime};
use tokio::time::timeout;

/// Generous bound for one event: a loaded CI machine, never a hang.
const STEP: Duration = Duration::from_secs(20);

const MUSIC: Activity = Activity {
    channel: Channel::Content,
    interface: "AudioPlayer",
    backgrounded: Backgrounded::Duck,
    gain: 1.0,
};

async fn next(player: &mut Player) -> Option<PlayerEvent> {
    timeout(STEP, player.next_event())
        .await
        .expect("an event, not a hang")
}

fn plays_like_ffmpeg(dir: &Path, path: &str, file: &str) {
    let reader = FifoReader::new(&dir.join("spk.fifo"));
    runtime().block_on(async {
        let server = Server::start().await;
        let speaker = Speaker::new(PlaybackConfig::device("spk")).expect("the speaker thread");
        let (audio, mut events) = server.open(path, Limits::default()).split();
        let mut player = speaker.play_media(audio, MUSIC).await.expect("spk opens");
        let format = player.output_format();
        let per_10ms = format.frame_bytes() * format.frames_per_10ms() as usize;
        let _all = reader.pace(per_10ms, usize::MAX, false);
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Started));
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Finished));
        let terminal = timeout(STEP, events.recv())
            .await
            .expect("the stream's end");
        assert_eq!(terminal, Some(MediaEvent::Finished), "{path}");
        drop((player, speaker));
        let written = f32le(&reader.join());
        let channels = usize::from(format.channels);
        let mono: Vec<f32> = written.chunks_exact(channels).map(|f| f[0]).collect();
        let factor = (format.rate / RATE) as usize;
        assert_eq!(
            factor * RATE as usize,
            format.rate as usize,
            "a rate of whole kHz × 8"
        );
        let ours = decimate(&mono, factor);
        // Sound starts after the silence the output plays while idle.
        let start = ours
            .iter()
            .position(|s| s.abs() > 0.01)
            .expect("sound was played");
        let c = correlation(&ours[start..], &reference(file));
        println!("{path}: correlation {c:.3} with ffmpeg's decode");
        assert!(c > 0.9, "{path}: correlation {c:.3}");
    });
}

alsa_test!(an_aac_stream_plays_through_the_speaker, |dir: &Path| {
    plays_like_ffmpeg(dir, "/media/tone.aac", "tone.aac");
});

alsa_test!(an_hls_playlist_plays_through_the_speaker, |dir: &Path| {
    plays_like_ffmpeg(dir, "/hls/vod.m3u8", "tone.aac");
});

alsa_test!(
    an_mpeg_ts_hls_of_aac_plays_through_the_speaker,
    |dir: &Path| {
        plays_like_ffmpeg(dir, "/hls/ts-aac/vod.m3u8", "ts-aac/vod.m3u8");
    }
);

alsa_test!(
    an_mpeg_ts_hls_of_mp3_plays_through_the_speaker,
    |dir: &Path| {
        plays_like_ffmpeg(dir, "/hls/ts-mp3/vod.m3u8", "ts-mp3/vod.m3u8");
    }
);
