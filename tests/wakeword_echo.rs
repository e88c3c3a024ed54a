//! The wake word while avsd itself plays: a room made by the test carries
//! what the playback FIFO really got back into the capture FIFO, delayed
//! and attenuated (the room's impulse response is made by sox), and mixes
//! in a talker. avsd must hear "Alexa, stop" said over its own answer,
//! and never wake on its own voice saying "Alexa".

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::audio::{decimate, path_str, s16le, tool};
use support::dialog::{Rig, speech16};
use support::fifo::{Clocked, ONE_PAGE, Tick, mkfifo, open_rw, queued};
use support::system::{AvsSim, World};

const CONFIG: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                      playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";
const WATCHING: &str = "listening for the wake word";
/// Bytes of 48 kHz stereo s16 per 10 ms tick.
const SPK_TICK: usize = 1_920;
/// Echo the room holds back before letting it through (80 ms).
const PREFILL: usize = 1_280;
/// 150 ms at 16 kHz: how far the indices may be from the word.
const TOLERANCE: i64 = 2_400;
/// 250 ms for the word's end, over the answer's echo.
const END_TOLERANCE: i64 = 4_000;

fn model() -> PathBuf {
    let dir = std::env::var_os("AVSD_WAKEWORD_MODEL_DIR").expect(
        "AVSD_WAKEWORD_MODEL_DIR is not set: run scripts/wakeword-model and set it to that \
         directory (scripts/test does both: target/wakeword-model)",
    );
    PathBuf::from(dir).join("alexa.json")
}

/// The room's impulse response at 16 kHz, made by sox from a click:
/// 20 ms of delay, -14 dB, and two weaker reflections.
fn room_response(dir: &Path) -> Vec<f32> {
    let click = dir.join("click.raw");
    let mut pcm = vec![0u8; 2 * 8_000];
    pcm[..2].copy_from_slice(&i16::MAX.to_le_bytes());
    std::fs::write(&click, &pcm).unwrap();
    let out = dir.join("room.raw");
    let raw = [
        "-t",
        "raw",
        "-r",
        "16000",
        "-c",
        "1",
        "-e",
        "signed-integer",
        "-b",
        "16",
    ];
    let mut args = raw.to_vec();
    args.push(path_str(&click));
    args.extend_from_slice(&raw);
    args.extend_from_slice(&[
        path_str(&out),
        "delay",
        "0.02",
        "vol",
        "0.2",
        "echos",
        "1",
        "1",
        "11",
        "0.3",
        "23",
        "0.15",
    ]);
    tool("sox", &args);
    let ir = s16le(&std::fs::read(&out).unwrap());
    let last = ir
        .iter()
        .rposition(|v| v.abs() > 1e-4)
        .expect("sox made a response");
    ir[..=last].to_vec()
}

/// What the room tells the test.
#[derive(Default)]
struct Heard {
    /// Every byte the playback FIFO carried.
    played: Vec<u8>,
    /// Samples written into the capture FIFO so far.
    mic_samples: u64,
    /// The least and most samples the room held back for the microphone.
    echo_queue: (usize, usize),
    /// Times the speaker gave too little for the echo to go on unbroken.
    underruns: u32,
}

/// One clock for both FIFOs, so the echo keeps its delay as in a room.
struct Room {
    speaker: File,
    response: Vec<(usize, f32)>,
    /// The played sound at 16 kHz, newest last, as long as the response.
    past: VecDeque<f32>,
    /// 48 kHz mono samples not yet decimated.
    wide: Vec<f32>,
    /// Room output waiting for the capture FIFO.
    echo: VecDeque<f32>,
    talker: Arc<Mutex<VecDeque<Vec<f32>>>>,
    talking: VecDeque<f32>,
    /// The echo is let through (the room's buffer was full enough).
    flowing: bool,
    heard: Arc<Mutex<Heard>>,
    buf: Vec<u8>,
}

impl Tick for Room {
    fn tick(&mut self, mic: &mut File) -> ControlFlow<()> {
        let got = match self.speaker.read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return ControlFlow::Break(()),
        };
        let mut heard = self.heard.lock().unwrap();
        heard.played.extend_from_slice(&self.buf[..got]);
        for frame in self.buf[..got].chunks_exact(4) {
            let l = f32::from(i16::from_le_bytes([frame[0], frame[1]]));
            let r = f32::from(i16::from_le_bytes([frame[2], frame[3]]));
            self.wide.push((l + r) / 2.0 / 32_768.0);
        }
        // 48 → 16 kHz: the mean of three (a linear filter the canceller
        // learns with the room).
        let whole = self.wide.len() / 3 * 3;
        for three in self.wide[..whole].chunks_exact(3) {
            let x = (three[0] + three[1] + three[2]) / 3.0;
            self.past.push_front(x);
            self.past
                .truncate(self.response.last().map_or(1, |r| r.0 + 1));
            let y: f32 = self
                .response
                .iter()
                .filter_map(|(k, h)| self.past.get(*k).map(|x| x * h))
                .sum();
            self.echo.push_back(y);
        }
        self.wide.drain(..whole);
        // One 10 ms piece a tick while ALSA takes them, as a sound card.
        if queued(mic) >= 2 * 320 {
            return ControlFlow::Continue(());
        }
        if self.talking.is_empty()
            && let Some(next) = self.talker.lock().unwrap().pop_front()
        {
            self.talking.extend(next);
        }
        // The speaker's FIFO gives its bytes in bursts: the room holds
        // 80 ms back, so the echo is one unbroken stream, as in the air.
        if self.echo.len() >= PREFILL {
            self.flowing = true;
        }
        let mut piece = [0u8; 320];
        for s in piece.chunks_exact_mut(2) {
            let echo = if self.flowing {
                self.echo.pop_front()
            } else {
                None
            };
            if echo.is_none() && self.flowing {
                self.flowing = false;
                heard.underruns += 1;
            }
            let v = echo.unwrap_or(0.0) + self.talking.pop_front().unwrap_or(0.0);
            let v = (v * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
            s.copy_from_slice(&v.to_le_bytes());
        }
        heard.mic_samples += 160;
        heard.echo_queue = (
            heard.echo_queue.0.min(self.echo.len()),
            heard.echo_queue.1.max(self.echo.len()),
        );
        let _ = mic.write(&piece);
        ControlFlow::Continue(())
    }
}

struct Echoing {
    rig: Rig,
    talker: Arc<Mutex<VecDeque<Vec<f32>>>>,
    heard: Arc<Mutex<Heard>>,
    _room: Clocked<Room>,
}

async fn echoing_rig() -> Echoing {
    let model = model();
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let section = format!(
        "[wakeword]\nenabled = true\nmodel = \"{}\"\n",
        model.display()
    );
    let rig = Rig::start_on(world, avs, |c| format!("{c}{section}"), CONFIG).await;
    let (mic, spk) = (rig.path("mic.fifo"), rig.path("spk.fifo"));
    mkfifo(&mic);
    mkfifo(&spk);
    let response: Vec<(usize, f32)> = room_response(rig.dir.path())
        .into_iter()
        .enumerate()
        .filter(|(_, h)| h.abs() > 1e-4)
        .collect();
    println!(
        "room: {} taps, {:?} .. {:?}",
        response.len(),
        response.first(),
        response.last()
    );
    let talker = Arc::new(Mutex::new(VecDeque::new()));
    let heard = Arc::new(Mutex::new(Heard {
        echo_queue: (usize::MAX, 0),
        ..Heard::default()
    }));
    let room = Room {
        speaker: open_rw(&spk, Some(ONE_PAGE)).unwrap(),
        response,
        past: VecDeque::new(),
        wide: Vec::new(),
        echo: VecDeque::new(),
        talker: talker.clone(),
        talking: VecDeque::new(),
        flowing: false,
        heard: heard.clone(),
        buf: vec![0; SPK_TICK],
    };
    let room = Clocked::start(open_rw(&mic, Some(ONE_PAGE)).unwrap(), room);
    rig.avsd
        .wait_log(WATCHING, 1, Duration::from_secs(30))
        .await;
    Echoing {
        rig,
        talker,
        heard,
        _room: room,
    }
}

/// Has avsd speak `text` (pushed as a Speak with an MP3 made here).
async fn speak(rig: &Rig, stem: &str, text: &str) {
    let dir = rig.dir.path();
    let wav = support::audio::speech_wav(dir, stem, text);
    let mp3 = dir.join(format!("{stem}.mp3"));
    tool("lame", &["--quiet", path_str(&wav), path_str(&mp3)]);
    let directive = json!({"directive": {"header": {"namespace": "SpeechSynthesizer",
        "name": "Speak", "messageId": format!("speak-{stem}")},
        "payload": {"url": format!("cid:{stem}"), "format": "AUDIO_MPEG", "token": stem}}});
    rig.avs
        .push(
            &format!("?attach={stem}&file={}", path_str(&mp3)),
            directive,
        )
        .await;
}

fn recognizes(stats: &Value) -> Vec<Value> {
    stats["recognizes"].as_array().cloned().unwrap_or_default()
}

/// Waits until the room has carried `ms` of sound from the speaker.
async fn wait_played(heard: &Mutex<Heard>, ms: usize) {
    let bytes = ms * SPK_TICK / 10;
    for _ in 0..6_000 {
        let played = {
            let h = heard.lock().unwrap();
            h.played
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| h.played.len() - i)
        };
        if played >= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the speaker did not play {ms} ms of sound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alexa_stop_over_alexas_own_answer_barges_in() {
    let e = echoing_rig().await;
    let rig = &e.rig;
    rig.avs
        .post("/dialog?end_of_speech_ms=500&stop_capture_ms=10000")
        .await;
    let from = rig.state_log().len();
    speak(
        rig,
        "long",
        "Here is the weather for today and tomorrow. In the morning it will be cloudy with \
         some rain in the north, and in the afternoon the sun comes out in most places. \
         Tomorrow will be warmer, with light winds from the south west and temperatures up \
         to twenty two degrees. At the weekend there may be thunder storms in the mountains.",
    )
    .await;
    rig.wait_state("speaking", from).await;
    // The canceller has learnt the room by now; then the talker.
    wait_played(&e.heard, 5_000).await;
    // "Alexa", a breath, "stop".
    let alexa = s16le(&speech16(rig.dir.path(), "alexa", "Alexa"));
    let mut talk = alexa.clone();
    talk.extend(std::iter::repeat_n(0.0, 4_800));
    talk.extend(s16le(&speech16(rig.dir.path(), "stop", "stop")));
    e.talker.lock().unwrap().push_back(talk.clone());
    let stats = rig.avs_wait("recognizes=1").await;
    {
        let h = e.heard.lock().unwrap();
        println!("room queue: {:?}, {} underruns", h.echo_queue, h.underruns);
    }
    let rec = &recognizes(&stats)[0];
    let init = &rec["initiator"];
    assert_eq!(init["type"], "WAKEWORD", "{rec:#}");
    let state_after = rig.state_log();
    assert!(
        state_after[from..].iter().any(|s| s == "listening"),
        "the answer gave way to a new request: {state_after:?}"
    );
    let log = rig.avsd.log_text();
    assert!(log.contains("barging in on Alexa's answer"), "{log}");
    let stats = rig
        .avs_wait("event=SpeechSynthesizer.SpeechInterrupted")
        .await;
    assert_eq!(recognizes(&stats).len(), 1, "exactly one request");

    // The indices bracket the word in what AVS heard (found there by
    // correlation with what the talker said).
    let start = init["payload"]["wakeWordIndices"]["startIndexInSamples"]
        .as_i64()
        .unwrap();
    let end = init["payload"]["wakeWordIndices"]["endIndexInSamples"]
        .as_i64()
        .unwrap();
    let wav = reqwest::get(format!("{}/audio?n=0", rig.avs.control))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let heard = s16le(&wav[44..]);
    let (first, last) = support::audio::active_span(&alexa, 0.01).expect("espeak-ng spoke");
    let short = decimate(&heard, 8);
    let (corr, lag) = find(&decimate(&alexa, 8), &short);
    let at = lag as i64 * 8;
    let (want_start, want_end) = (at + first as i64, at + last as i64);
    println!(
        "indices {start}..{end}; the word at {want_start}..{want_end} (correlation {corr:.2} \
         with what the talker said)"
    );
    assert!(corr > 0.5, "the word is in what AVS heard: {corr:.2}");
    // The end is looser than in silence: what the canceller leaves of the
    // answer after the word counts as loud and carries the end on.
    assert!(
        (start - want_start).abs() <= TOLERANCE && (end - want_end).abs() <= END_TOLERANCE,
        "indices {start}..{end} vs the word at {want_start}..{want_end}"
    );
}

/// Where `needle` lies whole inside `hay`: the best normalised
/// correlation and its offset.
fn find(needle: &[f32], hay: &[f32]) -> (f64, usize) {
    let energy = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    let en = energy(needle);
    (0..=hay.len().saturating_sub(needle.len()))
        .map(|lag| {
            let window = &hay[lag..lag + needle.len()];
            let dot: f64 = needle
                .iter()
                .zip(window)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (dot / (en * energy(window)).sqrt().max(1e-12), lag)
        })
        .fold((f64::MIN, 0), |best, c| if c.0 > best.0 { c } else { best })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alexas_own_alexa_does_not_wake_avsd() {
    let e = echoing_rig().await;
    let rig = &e.rig;
    let from = rig.state_log().len();
    speak(
        rig,
        "self",
        "Here is something about me. I answer questions, play music and set timers. \
         My name is Alexa. You can wake me by saying Alexa, and then what you want. \
         Alexa is the name. Alexa.",
    )
    .await;
    rig.wait_state("speaking", from).await;
    rig.avs_wait("event=SpeechSynthesizer.SpeechFinished").await;
    let idle = rig.wait_state("idle", from).await;
    // The echo has reached the microphone by now (the room's delay and
    // the buffers are well under a second).
    let said = e.heard.lock().unwrap().mic_samples;
    loop {
        if e.heard.lock().unwrap().mic_samples >= said + 16_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = rig.avs.stats().await;
    let log = rig.avsd.log_text();
    println!(
        "the far end said the word {} times; the microphone's engine heard an echo of it {} \
         times (ignored)",
        log.matches("the wake word is in avsd's own output").count(),
        log.matches("its echo, not a user").count()
    );
    assert!(recognizes(&stats).is_empty(), "no request: {stats:#}");
    assert_eq!(
        rig.avsd.log_text().matches("wake word heard").count(),
        0,
        "avsd did not wake on itself"
    );
    assert_eq!(rig.state_log()[idle..], ["idle"]);
    // And it did listen all along: the same watch from start to end.
    assert_eq!(rig.avsd.log_text().matches(WATCHING).count(), 1);
}
