//! avsd's audio through real ALSA (the `file` plugin, no sound card): capture
//! into AVS chunks, and playback of a streamed MP3. Each test runs in its own
//! process with its own asound.conf; see `audio_support`.
//!
//! Needs the Debian packages espeak-ng, sox, libsox-fmt-mp3 and lame
//! (`scripts/test-audio-deps` installs them).

use std::path::Path;
use std::time::{Duration, Instant};

use avsd::audio::focus::{Backgrounded, Channel};
use avsd::audio::{
    AVS_CHUNK_BYTES, Activity, AudioError, Capture, CaptureConfig, Direction, PlaybackConfig,
    Player, PlayerEvent, SampleKind, Speaker, StreamFormat,
};
use bytes::Bytes;
use tokio::time::timeout;

use support::alsa_test;
use support::audio::*;

/// Generous bound for one chunk or event: a loaded CI machine, never a hang.
const STEP: Duration = Duration::from_secs(10);

/// Receives chunks until `bytes` bytes have come; asserts every chunk is 320 bytes.
async fn collect(mic: &mut Capture, bytes: usize) -> (Vec<u8>, Instant) {
    let mut all = Vec::with_capacity(bytes + AVS_CHUNK_BYTES);
    let mut first = None;
    while all.len() < bytes {
        let chunk = timeout(STEP, mic.next_chunk())
            .await
            .expect("a chunk within the time bound")
            .expect("the capture is still running")
            .expect("no capture error");
        first.get_or_insert_with(Instant::now);
        assert_eq!(chunk.len(), AVS_CHUNK_BYTES, "every chunk is 10 ms");
        all.extend_from_slice(&chunk);
    }
    (all, first.expect("at least one chunk"))
}

alsa_test!(capture_16k_mono_is_byte_exact, |dir: &Path| {
    let wav = speech_wav(dir, "q", "what time is it in Seattle");
    let raw = dir.join("q16.raw");
    tool(
        "sox",
        &[
            path_str(&wav),
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-L",
            "-t",
            "raw",
            path_str(&raw),
        ],
    );
    let data = std::fs::read(&raw).expect("read q16.raw");
    assert!(data.len() > 16_000, "espeak made speech");
    let writer = FifoWriter::new(
        &dir.join("mic16.fifo"),
        data.clone(),
        320,
        Duration::from_millis(10),
    );
    runtime().block_on(async {
        // The config's default: ALSA's `default` PCM, here routed to mic16.
        // No format given: the file plugin offers everything, and avsd must
        // pick 16 kHz mono i16 itself.
        let mut mic = Capture::start(CaptureConfig::default()).await.expect("open default");
        assert_eq!(
            mic.device_format(),
            StreamFormat { rate: 16_000, channels: 1, sample: SampleKind::I16 }
        );
        writer.go();
        let (got, first_chunk) = collect(&mut mic, data.len()).await;
        let overruns = mic.overruns();
        // close() returns once ALSA has let go of the device.
        timeout(STEP, mic.close()).await.expect("closed promptly");
        let t0 = writer.join().expect("writer started");
        let latency = first_chunk.duration_since(t0);
        // Overruns may come after the file's end: the null device then delivers
        // silence faster than real time. The byte comparison shows that no
        // sample of the file itself was lost.
        // Latency is a figure for scripts/bench (trigger to first audio
        // byte), not a pass mark here: a loaded CI machine would fail it.
        println!(
            "16 kHz mono: first chunk {latency:?} after the first sample was written; {overruns} overruns"
        );
        let whole = data.len() / AVS_CHUNK_BYTES * AVS_CHUNK_BYTES;
        assert!(got[..whole] == data[..whole], "the chunks are the file, byte for byte");
        // The tail: the file's last bytes, then the silence after its end.
        assert_eq!(&got[whole..data.len()], &data[whole..]);
    });
});

alsa_test!(capture_48k_stereo_f32_matches_sox, |dir: &Path| {
    let wav = speech_wav(dir, "q", "what is the weather like tomorrow");
    let raw48 = dir.join("q48.raw");
    // Left: the speech; right: the same at half level, so the mix is an average.
    tool(
        "sox",
        &[
            path_str(&wav),
            "-r",
            "48000",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-L",
            "-t",
            "raw",
            path_str(&raw48),
            "remix",
            "1",
            "1v0.5",
        ],
    );
    let ref16 = dir.join("ref16.raw");
    reference_16k(&raw48, &ref16);
    let data = std::fs::read(&raw48).expect("read q48.raw");
    let reference = s16le(&std::fs::read(&ref16).expect("read ref16.raw"));
    // 10 ms of 48 kHz stereo f32: 480 frames of 8 bytes, one device period.
    let writer = FifoWriter::new(
        &dir.join("mic48.fifo"),
        data,
        3840,
        Duration::from_millis(10),
    );
    runtime().block_on(async {
        let format = StreamFormat {
            rate: 48_000,
            channels: 2,
            sample: SampleKind::F32,
        };
        let mut mic = Capture::start(CaptureConfig {
            device: "mic48".into(),
            format: Some(format),
        })
        .await
        .expect("open mic48");
        writer.go();
        // The reference length plus 200 ms of the silence that follows.
        let (got, first_chunk) = collect(&mut mic, reference.len() * 2 + 6_400).await;
        mic.stop();
        let t0 = writer.join().expect("writer started");
        let latency = first_chunk.duration_since(t0);
        println!("48 kHz stereo f32: first chunk {latency:?} after the first sample was written");
        assert!(
            latency < Duration::from_millis(250),
            "first audio promptly: {latency:?}"
        );

        let ours = s16le(&got);
        let level = rms(&ours[..reference.len()]);
        assert!(level > 0.01, "not silence: rms {level}");
        let (of, ol) = active_span(&ours, 0.02).expect("speech in our output");
        let (rf, rl) = active_span(&reference, 0.02).expect("speech in sox's output");
        let (ours_len, ref_len) = ((ol - of) as f64, (rl - rf) as f64);
        println!("speech spans {ours_len} samples (sox: {ref_len}), starting at {of} (sox: {rf})");
        assert!((ours_len / ref_len - 1.0).abs() < 0.03, "length within 3%");
        let (corr, lag) = best_correlation(&ours[..reference.len()], &reference, 160);
        println!("normalized cross-correlation with sox: {corr:.4} at lag {lag}");
        assert!(corr > 0.9, "matches sox's conversion: {corr}");
        assert!(lag.abs() <= 2, "time-aligned with sox: lag {lag}");
    });
});

alsa_test!(
    unknown_devices_are_named_with_the_alternatives,
    |_dir: &Path| {
        runtime().block_on(async {
        let err = Capture::start(CaptureConfig::device("nosuchmic")).await.err().expect("no such mic");
        let AudioError::NoDevice { name, direction, available } = &err else {
            panic!("expected NoDevice, got {err:?}");
        };
        assert_eq!((name.as_str(), *direction), ("nosuchmic", Direction::Capture));
        for want in ["default", "mic16", "mic48"] {
            assert!(available.iter().any(|a| a == want), "{want} listed in {available:?}");
        }
        let msg = err.to_string();
        println!("{msg}");
        assert!(msg.contains("nosuchmic") && msg.contains("mic16") && msg.contains("audio.capture_device"));

        let err = Player::start(PlaybackConfig::device("nosuchspeaker")).await.err().expect("no such speaker");
        assert!(
            matches!(&err, AudioError::NoDevice { direction: Direction::Playback, available, .. }
                if available.iter().any(|a| a == "spk")),
            "{err:?}"
        );
        assert!(err.to_string().contains("audio.playback_device"));
    });
    }
);

alsa_test!(
    capture_device_failing_mid_stream_ends_with_an_error,
    |dir: &Path| {
        // ALSA's file plugin copies what it captures to `tee.fifo`. This test
        // holds that FIFO's only reader; closing it makes the copy, and so
        // ALSA's read, fail: the device "goes away" mid-stream.
        let tee = dir.join("tee.fifo");
        mkfifo(&tee);
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tee)
            .expect("open tee");
        runtime().block_on(async {
        let mut mic = Capture::start(CaptureConfig::device("micfail")).await.expect("open micfail");
        collect(&mut mic, 5 * AVS_CHUNK_BYTES).await;
        drop(reader);
        let err = loop {
            match timeout(STEP, mic.next_chunk()).await.expect("an error, not a hang") {
                Some(Ok(_)) => continue, // audio captured before the failure
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        println!("{err}");
        assert!(
            matches!(&err, AudioError::Device { name, direction: Direction::Capture, .. } if name == "micfail"),
            "{err:?}"
        );
        let after = timeout(STEP, mic.next_chunk()).await.expect("closed, not hung");
        assert!(after.is_none(), "nothing after the error");
    });
    }
);

/// Makes `DIR/answer.mp3` (24 kHz mono, like AVS answers) from speech, and
/// sox's own decode of it at `rate` Hz mono f32.
fn answer_mp3(dir: &Path, rate: u32) -> (Vec<u8>, Vec<f32>) {
    let wav = speech_wav(
        dir,
        "a",
        "It is five past six in the morning. Have a nice day.",
    );
    let wav24 = dir.join("a24.wav");
    tool(
        "sox",
        &[path_str(&wav), "-r", "24000", "-c", "1", path_str(&wav24)],
    );
    let mp3 = dir.join("answer.mp3");
    // With an ID3v2 tag in front, as some servers send: the decoder must skip it.
    tool(
        "lame",
        &[
            "--quiet",
            "-b",
            "48",
            "--add-id3v2",
            "--tt",
            "avsd answer",
            path_str(&wav24),
            path_str(&mp3),
        ],
    );
    let reference = dir.join("answer_ref.raw");
    let rate = rate.to_string();
    tool(
        "sox",
        &[
            path_str(&mp3),
            "-t",
            "raw",
            "-r",
            &rate,
            "-c",
            "1",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-L",
            path_str(&reference),
        ],
    );
    (
        std::fs::read(&mp3).expect("read answer.mp3"),
        f32le(&std::fs::read(&reference).expect("read reference")),
    )
}

/// Channel 0 of interleaved f32 frames, checking every channel carries it.
fn mono_of(written: &[u8], channels: usize) -> Vec<f32> {
    let samples = f32le(written);
    let frames: Vec<&[f32]> = samples.chunks_exact(channels).collect();
    assert!(
        frames.iter().all(|f| f.iter().all(|s| *s == f[0])),
        "mono is copied to every channel"
    );
    frames.iter().map(|f| f[0]).collect()
}

async fn next(player: &mut Player) -> Option<PlayerEvent> {
    timeout(STEP, player.next_event())
        .await
        .expect("an event, not a hang")
}

alsa_test!(
    mp3_plays_into_the_speaker_while_it_streams_in,
    |dir: &Path| {
        let reader = FifoReader::new(&dir.join("spk.fifo"));
        runtime().block_on(async {
        let mut player = Player::start(PlaybackConfig::device("spk")).await.expect("open spk");
        let format = player.output_format();
        println!("speaker opened as {format}");
        assert_eq!(format.sample, SampleKind::F32, "the file plugin's default");
        reader.pace(format.frame_bytes() * format.frames_per_10ms() as usize, usize::MAX, false);
        let (mp3, reference) = answer_mp3(dir, format.rate);

        // Half the MP3 first: sound must start before the rest arrives.
        let half = mp3.len() / 2;
        let pushed = Instant::now();
        for piece in mp3[..half].chunks(1_000) {
            player.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Started), "started on half the MP3");
        println!("Started {:?} after the first MP3 bytes were pushed", pushed.elapsed());
        for piece in mp3[half..].chunks(1_000) {
            player.push(Bytes::copy_from_slice(piece));
        }
        player.finish();
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Finished));
        let offset = player.offset_ms();
        let underruns = player.underruns();
        assert_eq!(next(&mut player).await, None, "device closed after Finished");
        drop(player);
        let written = reader.join();

        let ours = mono_of(&written, usize::from(format.channels));
        let level = rms(&ours);
        assert!(level > 0.005, "not silence: rms {level}");
        let (of, ol) = active_span(&ours, 0.02).expect("sound in the speaker");
        let (rf, rl) = active_span(&reference, 0.02).expect("sound in sox's decode");
        let (ours_len, ref_len) = ((ol - of) as f64, (rl - rf) as f64);
        let rate = f64::from(format.rate);
        println!(
            "played {:.3} s of sound (sox decode: {:.3} s), offset {offset} ms, {underruns} underruns",
            ours_len / rate,
            ref_len / rate
        );
        assert!((ours_len / ref_len - 1.0).abs() < 0.03, "duration within 3%");
        // Align the starts of sound (the device plays silence until the
        // first frame is decoded), then compare at 8 kHz over ±50 ms.
        let margin = (rate / 50.0) as usize;
        let factor = (format.rate / 8_000).max(1) as usize;
        let a = decimate(&ours[of.saturating_sub(margin)..], factor);
        let b = decimate(&reference[rf.saturating_sub(margin)..], factor);
        let n = a.len().min(b.len());
        let (corr, lag) = best_correlation(&a[..n], &b[..n], 400);
        println!("normalized cross-correlation with sox's decode: {corr:.4} at lag {lag} (8 kHz)");
        assert!(corr > 0.9, "the speaker got the decoded answer: {corr}");
    });
    }
);

alsa_test!(stop_interrupts_playback, |dir: &Path| {
    let reader = FifoReader::new(&dir.join("spk.fifo"));
    runtime().block_on(async {
        // `default` routes playback to spk.
        let mut player = Player::start(PlaybackConfig::default())
            .await
            .expect("open default");
        let format = player.output_format();
        let per_10ms = format.frame_bytes() * format.frames_per_10ms() as usize;
        // Stop once the speaker has played one second.
        let one_second = reader.pace(per_10ms, per_10ms * 100, false);
        let (mp3, reference) = answer_mp3(dir, format.rate);
        player.push(Bytes::from(mp3));
        player.finish();
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Started));
        timeout(STEP, one_second)
            .await
            .expect("a second played")
            .expect("reader alive");
        player.stop();
        let offset = player.offset_ms();
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Stopped));
        assert_eq!(next(&mut player).await, None);
        drop(player);
        let ours = mono_of(&reader.join(), usize::from(format.channels));
        let rate = f64::from(format.rate);
        // Positions in answer time: our file starts with the silence played
        // before the first frame was decoded, so shift by where sound starts.
        let (rf, rl) = active_span(&reference, 0.02).expect("sound in sox's decode");
        let last_sound = active_span(&ours, 0.02)
            .map_or(0.0, |(of, ol)| (ol + rf).saturating_sub(of) as f64 / rate);
        println!(
            "stopped at offset {offset} ms; sound written up to {last_sound:.3} s of {:.3} s",
            rl as f64 / rate
        );
        assert!(last_sound > 0.5, "it played before the stop");
        assert!(last_sound < 0.6 * rl as f64 / rate, "stopped early");
        // At once: nothing much beyond what was handed to ALSA when stopped
        // (the device keeps at most the period in flight).
        let handed = offset as f64 / 1000.0;
        assert!(
            last_sound <= handed + 0.05,
            "nothing played after stop: {last_sound} > {handed}"
        );
    });
});

/// The `spk` device opened, and its bytes per 10 ms.
async fn open_spk() -> (Player, usize) {
    let player = Player::start(PlaybackConfig::device("spk"))
        .await
        .expect("open spk");
    let format = player.output_format();
    let per_10ms = format.frame_bytes() * format.frames_per_10ms() as usize;
    (player, per_10ms)
}

alsa_test!(speaker_going_away_mid_play_reports_failed, |dir: &Path| {
    let reader = FifoReader::new(&dir.join("spk.fifo"));
    runtime().block_on(async {
        let (mut player, per_10ms) = open_spk().await;
        let format = player.output_format();
        let _hung_up = reader.pace(per_10ms, per_10ms * 50, true);
        let (mp3, _) = answer_mp3(dir, format.rate);
        player.push(Bytes::from(mp3));
        player.finish();
        assert_eq!(next(&mut player).await, Some(PlayerEvent::Started));
        match next(&mut player).await {
            Some(PlayerEvent::Failed(e @ AudioError::Device { .. })) => println!("{e}"),
            other => panic!("expected a device failure, got {other:?}"),
        }
        assert_eq!(next(&mut player).await, None);
        drop(player);
        reader.join();
    });
});

alsa_test!(
    a_speaker_that_stops_taking_audio_reports_failed,
    |dir: &Path| {
        let reader = FifoReader::new(&dir.join("spk.fifo"));
        runtime().block_on(async {
            let (mut player, per_10ms) = open_spk().await;
            let format = player.output_format();
            // Half a second of sound, then the reader stops without closing:
            // ALSA blocks writing into the full pipe and never reports an error.
            reader.pace_then_stall(per_10ms, per_10ms * 50);
            let (mp3, _) = answer_mp3(dir, format.rate);
            player.push(Bytes::from(mp3));
            player.finish();
            assert_eq!(next(&mut player).await, Some(PlayerEvent::Started));
            match next(&mut player).await {
                Some(PlayerEvent::Failed(e @ AudioError::Device { .. })) => {
                    assert!(e.to_string().contains("asked for no audio"), "{e}");
                }
                other => panic!("expected a device failure, got {other:?}"),
            }
            drop(player);
            reader.join();
        });
    }
);

alsa_test!(garbage_instead_of_mp3_fails_cleanly, |dir: &Path| {
    let reader = FifoReader::new(&dir.join("spk.fifo"));
    runtime().block_on(async {
        let mut player = Player::start(PlaybackConfig::device("spk"))
            .await
            .expect("open spk");
        let format = player.output_format();
        reader.pace(
            format.frame_bytes() * format.frames_per_10ms() as usize,
            usize::MAX,
            false,
        );
        player.push(Bytes::from(vec![0x42u8; 5_000]));
        player.finish();
        match next(&mut player).await {
            Some(PlayerEvent::Failed(AudioError::Decode(msg))) => println!("decode error: {msg}"),
            other => panic!("expected a decode failure, got {other:?}"),
        }
        assert_eq!(next(&mut player).await, None);
        drop(player);
        reader.join();
    });
});

/// Amplitude of the `freq` Hz component of `x` (sampled at `rate` Hz).
fn tone_amplitude(x: &[f32], freq: f32, rate: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * freq / rate;
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (i, s) in x.iter().enumerate() {
        let phase = f64::from(w) * i as f64;
        re += f64::from(*s) * phase.cos();
        im -= f64::from(*s) * phase.sin();
    }
    (2.0 * (re * re + im * im).sqrt() / x.len().max(1) as f64) as f32
}

/// A 12 s, 3 kHz sine at half scale as a 24 kHz MP3: "music" whose level
/// can be told apart from speech in the mix.
fn music_mp3(dir: &Path) -> Vec<u8> {
    let wav = dir.join("music.wav");
    tool(
        "sox",
        &[
            "-n",
            "-r",
            "24000",
            "-c",
            "1",
            path_str(&wav),
            "synth",
            "12",
            "sine",
            "3000",
            "vol",
            "0.5",
        ],
    );
    let mp3 = dir.join("music.mp3");
    tool(
        "lame",
        &["--quiet", "-b", "64", path_str(&wav), path_str(&mp3)],
    );
    std::fs::read(&mp3).expect("read music.mp3")
}

/// A channel that already holds all of `data` and is closed, as a fully
/// arrived attachment.
fn arrived(data: &[u8]) -> tokio::sync::mpsc::Receiver<Bytes> {
    let pieces: Vec<Bytes> = data.chunks(1_000).map(Bytes::copy_from_slice).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(pieces.len().max(1));
    for piece in pieces {
        tx.try_send(piece).expect("room for every piece");
    }
    rx
}

alsa_test!(
    an_answer_over_music_ducks_it_through_the_one_output,
    |dir: &Path| {
        let reader = FifoReader::new(&dir.join("spk.fifo"));
        runtime().block_on(async {
            // Made first: under load, sox and lame take a while.
            let (mp3, reference) = answer_mp3(dir, 48_000);
            let speaker = Speaker::new(PlaybackConfig::device("spk")).expect("speaker thread");
            let music_activity = Activity {
                channel: Channel::Content,
                interface: "AudioPlayer",
                backgrounded: Backgrounded::Duck,
                gain: 1.0,
            };
            let mut music = speaker
                .play(arrived(&music_mp3(dir)), music_activity)
                .await
                .expect("open spk for the music");
            let format = music.output_format();
            let per_10ms = format.frame_bytes() * format.frames_per_10ms() as usize;
            // Alexa answers once a second of music has played.
            let one_second = reader.pace(per_10ms, per_10ms * 100, false);
            assert_eq!(next(&mut music).await, Some(PlayerEvent::Started));
            timeout(STEP, one_second).await.expect("a second of music").expect("reader alive");
            assert_eq!(format.rate, 48_000, "the file plugin's default rate");
            let asked = Instant::now();
            let mut answer = speaker.speak(arrived(&mp3)).await.expect("the answer plays");
            assert_eq!(next(&mut answer).await, Some(PlayerEvent::Started));
            println!("the answer started {:?} after it was handed over", asked.elapsed());
            assert_eq!(next(&mut answer).await, Some(PlayerEvent::Finished));
            assert_eq!(next(&mut answer).await, None);
            assert_eq!(next(&mut music).await, Some(PlayerEvent::Finished), "the music played on");
            drop((music, answer, speaker));
            let ours = mono_of(&reader.join(), usize::from(format.channels));

            // The music's level, 50 ms at a time: full, ducked while Alexa
            // speaks, full again.
            let rate = format.rate as f32;
            let window = (format.rate / 20) as usize;
            let levels: Vec<f32> = ours
                .chunks_exact(window)
                .map(|w| tone_amplitude(w, 3_000.0, rate))
                .collect();
            let full = levels.iter().cloned().fold(0.0f32, f32::max);
            assert!(full > 0.3, "the music was heard: {full}");
            // The longest run of ducked windows (a window holding the end
            // of the music is low too, but alone).
            let is_ducked = |l: f32| l < 0.3 * full && l > 0.02 * full;
            let (mut first, mut last, mut run_from) = (0, 0, None);
            for (i, l) in levels.iter().enumerate() {
                match (is_ducked(*l), run_from) {
                    (true, None) => run_from = Some(i),
                    (false, Some(from)) => {
                        if i - from > last + 1 - first {
                            (first, last) = (from, i - 1);
                        }
                        run_from = None;
                    }
                    _ => {}
                }
            }
            assert!(last > first, "the music was ducked: {levels:?}");
            let mut inside: Vec<f32> = levels[first..=last].to_vec();
            inside.sort_by(f32::total_cmp);
            let median = inside[inside.len() / 2] / full;
            let (_, rl) = active_span(&reference, 0.0).expect("the answer");
            let answer_s = rl as f32 / rate;
            let ducked_s = (last + 1 - first) as f32 * window as f32 / rate;
            println!(
                "music at {full:.3}; ducked to {median:.3} of it for {ducked_s:.2} s (the answer: {answer_s:.2} s)"
            );
            assert!((0.05..0.2).contains(&median), "ducked to about -20 dB: {median}");
            assert!((ducked_s - answer_s).abs() < 0.3, "ducked while the answer played");
            // The windows either side of the ducked ones hold part of a
            // ramp; the ones beyond are at full level.
            let before = &levels[..first.saturating_sub(1)];
            let after = &levels[(last + 2).min(levels.len())..];
            assert!(before.iter().rev().take(10).all(|l| *l > 0.8 * full), "full before: {before:?}");
            assert!(after.iter().take(10).all(|l| *l > 0.8 * full), "full after: {after:?}");
            assert!(before.len() >= 10 && after.len() >= 10, "music before and after");

            // And the answer itself is in the mix over the ducked music.
            let factor = (format.rate / 8_000).max(1) as usize;
            let a = decimate(&ours[first * window..(last + 1) * window], factor);
            let b = decimate(&reference, factor);
            let n = a.len().min(b.len());
            let (corr, lag) = best_correlation(&a[..n], &b[..n], 800);
            println!("the answer in the mix: correlation {corr:.3} at lag {lag} (8 kHz)");
            assert!(corr > 0.8, "the answer was heard over the music: {corr}");
        });
    }
);
