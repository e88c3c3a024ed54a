//! Rig for the voice dialog tests: the whole system (LWA stand-in,
//! companion, AVS stand-in, private bus) and a logged-in, connected avsd
//! whose microphone and speaker are real ALSA PCMs backed by FIFOs.
//!
//! - The microphone FIFO is fed by [`Mic`] on a 10 ms clock: speech when the
//!   test queues some, silence otherwise. It writes only while the pipe is
//!   nearly empty, so nothing piles up while avsd is not capturing and what
//!   avsd reads is close to real time.
//! - The speaker FIFO is drained by [`Speaker`] on a 10 ms clock, which
//!   paces ALSA's otherwise unpaced `null` device to real time.
//!
//! Both hold their FIFO open read-write, so ALSA's opens never block and a
//! closed device never reads as end of file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use avsctl::proxy::{AuthorizationProxy, DialogProxy};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::audio::mkfifo;
use crate::companion::WAIT;
use crate::system::{AvsSim, World, wait_connection};
use crate::{Daemon, Notify};

/// `[audio]` for the rig's PCMs: `mic` is 16 kHz mono i16, `mic48` 48 kHz
/// stereo f32, `micfail` fails once its copy's reader goes, `spk` 48 kHz
/// stereo i16.
pub fn asound_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"pcm.mic {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/mic.fifo" format "raw" hint {{ show on description "test mic" }} }}
pcm.mic48 {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/mic48.fifo" format "raw" hint {{ show on description "test mic 48k" }} }}
pcm.micfail {{ type file slave.pcm {{ type null }} file "{d}/tee.fifo" infile "/dev/zero" format "raw" hint {{ show on description "failing mic" }} }}
pcm.spk {{ type file slave.pcm {{ type null }} file "{d}/spk.fifo" format "raw" hint {{ show on description "test speaker" }} }}
pcm.!default {{ type asym capture.pcm "mic" playback.pcm "spk" }}
"#
    )
}

/// Bytes in 10 ms of the speaker's format (48 kHz stereo i16).
pub const SPEAKER_10MS: usize = 480 * 2 * 2;

/// A logged-in avsd connected to the AVS stand-in, with its audio rig.
pub struct Rig {
    /// The bus, stand-ins and companion.
    pub world: World,
    /// The AVS stand-in.
    pub avs: AvsSim,
    /// The avsd under test.
    pub avsd: Daemon,
    /// Its Authorization interface.
    pub auth: AuthorizationProxy<'static>,
    /// Its Dialog interface.
    pub dialog: DialogProxy<'static>,
    /// Holds the FIFOs and the ALSA config.
    pub dir: tempfile::TempDir,
    /// Every Dialog.State avsd announced, in order, starting with the first read.
    pub states: watch::Receiver<Vec<String>>,
}

impl Rig {
    /// Start everything; `audio` is avsd's `[audio]` section body.
    pub async fn start(audio: &str) -> Rig {
        let world = World::new(3600).await;
        let avs = AvsSim::start(&world.env, &[]).await;
        Self::start_on(world, avs, |c| c, audio).await
    }

    /// Start avsd on `world` and `avs`, with its config text passed through
    /// `adjust` (to route AVS through a proxy, say) before the `[audio]`
    /// section, whose body is `audio`, is appended.
    pub async fn start_on(
        world: World,
        avs: AvsSim,
        adjust: impl FnOnce(String) -> String,
        audio: &str,
    ) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("avsd-dialog")
            .tempdir()
            .unwrap();
        let conf = dir.path().join("asound.conf");
        std::fs::write(&conf, asound_conf(dir.path())).unwrap();
        let config = format!(
            "{}[audio]\n{audio}\n",
            adjust(world.avsd_config_with_avs(&avs, 600))
        );
        let notify = Notify::bind();
        let alsa = conf.display().to_string();
        let avsd = Daemon::start(
            &world.bus,
            Some(&notify),
            &config,
            &[("ALSA_CONFIG_PATH", alsa.as_str())],
        );
        notify.wait_for("READY=1", Duration::from_secs(20));
        let auth = world.log_in_daemon(&avsd).await;
        let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
        wait_connection(&dialog, "connected", &avsd).await;
        let states = record_states(dialog.clone()).await;
        Rig {
            world,
            avs,
            avsd,
            auth,
            dialog,
            dir,
            states,
        }
    }

    /// A path in the rig's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Wait until Dialog.State has been `want` (at or after index `from`
    /// of the recorded states); returns the index where it was seen.
    pub async fn wait_state(&self, want: &str, from: usize) -> usize {
        self.wait_state_within(want, from, WAIT).await
    }

    /// [`Rig::wait_state`] with its own time limit.
    pub async fn wait_state_within(&self, want: &str, from: usize, limit: Duration) -> usize {
        let mut rx = self.states.clone();
        let found = tokio::time::timeout(limit, async {
            loop {
                if let Some(i) = rx.borrow_and_update()[from..]
                    .iter()
                    .position(|s| s == want)
                {
                    return from + i;
                }
                rx.changed().await.expect("the state recorder stopped");
            }
        })
        .await;
        match found {
            Ok(i) => i,
            Err(_) => panic!(
                "Dialog.State never became {want}; states {:?}; LastError {:?}\navs-sim:\n{}\navsd log:\n{}",
                self.states.borrow(),
                self.dialog.last_error().await.unwrap_or_default(),
                self.avs.log.lock().unwrap(),
                self.avsd.log_text()
            ),
        }
    }

    /// Wait, through PropertiesChanged, until Dialog.LastError mentions `text`.
    pub async fn wait_last_error(&self, text: &str) -> String {
        let mut changes = self.dialog.receive_last_error_changed().await;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let now = self.dialog.last_error().await.unwrap();
                if now.contains(text) {
                    return now;
                }
                changes.next().await.expect("avsd left the bus");
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("LastError never mentioned {text:?}"))
    }

    /// The states recorded so far.
    pub fn state_log(&self) -> Vec<String> {
        self.states.borrow().clone()
    }

    /// The stand-in's stats once `conditions` hold.
    pub async fn avs_wait(&self, conditions: &str) -> serde_json::Value {
        self.avs.wait(conditions).await
    }
}

/// Follow Dialog.State through PropertiesChanged into a growing list. The
/// signals themselves, not zbus's property stream: that one reads its
/// cache when polled, so `listening` then `idle` a few milliseconds apart
/// would be seen as `idle` alone.
async fn record_states(dialog: DialogProxy<'static>) -> watch::Receiver<Vec<String>> {
    let props = zbus::fdo::PropertiesProxy::builder(dialog.inner().connection())
        .destination("org.avsd.Avs1")
        .unwrap()
        .path("/org/avsd/Avs1")
        .unwrap()
        .build()
        .await
        .unwrap();
    // Subscribed before the first read, so no change falls in between.
    let mut changes = props.receive_properties_changed().await.unwrap();
    let first = dialog.state().await.unwrap();
    let (tx, rx) = watch::channel(vec![first]);
    tokio::spawn(async move {
        let _props = props;
        while let Some(signal) = changes.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.interface_name().as_str() != "org.avsd.Avs1.Dialog" {
                continue;
            }
            let Some(zbus::zvariant::Value::Str(state)) = args.changed_properties().get("State")
            else {
                continue;
            };
            let state = state.to_string();
            tx.send_modify(|v| {
                // A change made before the first read may come after it.
                if v.last() != Some(&state) {
                    v.push(state);
                }
            });
        }
    });
    rx
}

/// A FIFO made at `path` and held open read-write and non-blocking, with a
/// thread that calls `tick` on it every 10 ms until dropped.
struct Clocked {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Clocked {
    fn start(path: &Path, mut tick: impl FnMut(&mut File) + Send + 'static) -> Clocked {
        mkfifo(path);
        let mut fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // One page of pipe: what ALSA writes is heard within a few ms, as on
        // a sound card, not up to 64 KiB later (the player's Finished would
        // then come long before the last sample is "heard"); and what is
        // fed waits for ALSA to read it instead of piling up.
        // SAFETY: F_SETPIPE_SZ on a FIFO we own; no pointers involved.
        unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut next = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                tick(&mut fifo);
                next += Duration::from_millis(10);
                match next.checked_duration_since(Instant::now()) {
                    Some(wait) => thread::sleep(wait),
                    None => next = Instant::now(),
                }
            }
        });
        Clocked {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Clocked {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Said = tokio::sync::oneshot::Sender<()>;

/// Feeds a capture FIFO on a 10 ms clock (see the module doc).
pub struct Mic {
    queue: mpsc::Sender<(Vec<u8>, Said)>,
    _clock: Clocked,
}

impl Mic {
    /// Feed `path` (made here) with `chunk` bytes per 10 ms.
    pub fn new(path: &Path, chunk: usize) -> Mic {
        let (queue, rx) = mpsc::channel::<(Vec<u8>, Said)>();
        let silence = vec![0u8; chunk];
        let mut speech: Vec<u8> = Vec::new();
        let mut at = 0;
        let mut done: Option<Said> = None;
        let clock = Clocked::start(path, move |fifo| {
            if at >= speech.len() {
                if let Some(tx) = done.take() {
                    let _ = tx.send(());
                }
                if let Ok((pcm, tx)) = rx.try_recv() {
                    (speech, at, done) = (pcm, 0, Some(tx));
                }
            }
            // Only top up a nearly empty pipe: nobody reading means nothing
            // written, so no stale audio waits for the next open.
            if queued(fifo) >= 2 * chunk {
                return;
            }
            let piece = if at < speech.len() {
                let end = (at + chunk).min(speech.len());
                let mut p = speech[at..end].to_vec();
                p.resize(chunk, 0);
                at = end;
                p
            } else {
                silence.clone()
            };
            let _ = fifo.write_all(&piece);
        });
        Mic {
            queue,
            _clock: clock,
        }
    }

    /// Speak `pcm` (in the FIFO's format) as soon as the previous speech is
    /// out; the receiver fires once it has all been written.
    pub fn say(&self, pcm: Vec<u8>) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue.send((pcm, tx)).expect("mic thread runs");
        rx
    }
}

/// Bytes waiting in a pipe (FIONREAD).
fn queued(fifo: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// Drains a playback FIFO on a 10 ms clock and keeps every byte.
pub struct Speaker {
    /// Every byte ALSA played.
    pub bytes: Arc<Mutex<Vec<u8>>>,
    /// Bytes read since the first non-zero one (how much sound was played).
    sound: watch::Receiver<usize>,
    _clock: Clocked,
}

impl Speaker {
    /// Drain `path` (made here) at `per_10ms` bytes per 10 ms.
    pub fn new(path: &Path, per_10ms: usize) -> Speaker {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let (sound_tx, sound) = watch::channel(0);
        let mut buf = vec![0u8; per_10ms];
        let mut sound_from = None;
        let clock = Clocked::start(path, move |fifo| {
            let Ok(n) = fifo.read(&mut buf) else {
                return;
            };
            let mut all = sink.lock().unwrap();
            if sound_from.is_none()
                && let Some(i) = buf[..n].iter().position(|b| *b != 0)
            {
                sound_from = Some(all.len() + i);
            }
            all.extend_from_slice(&buf[..n]);
            if let Some(from) = sound_from {
                sound_tx.send_replace(all.len() - from);
            }
        });
        Speaker {
            bytes,
            sound,
            _clock: clock,
        }
    }

    /// Wait until `bytes` of sound have been played.
    pub async fn wait_sound(&self, bytes: usize) {
        let mut rx = self.sound.clone();
        tokio::time::timeout(WAIT, rx.wait_for(|n| *n >= bytes))
            .await
            .expect("the speaker played sound")
            .expect("the speaker thread runs");
    }

    /// Everything played so far.
    pub fn played(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

/// Speech from espeak-ng as raw PCM in `sox` output options `format`
/// (e.g. `["-r", "16000", "-c", "1", "-e", "signed-integer", "-b", "16"]`).
pub fn speech_raw(dir: &Path, stem: &str, text: &str, format: &[&str]) -> Vec<u8> {
    let wav = crate::audio::speech_wav(dir, stem, text);
    let raw = dir.join(format!("{stem}.raw"));
    let mut args = vec![crate::audio::path_str(&wav)];
    args.extend_from_slice(format);
    args.extend_from_slice(&["-L", "-t", "raw", crate::audio::path_str(&raw)]);
    crate::audio::tool("sox", &args);
    std::fs::read(&raw).unwrap()
}

/// 16 kHz mono 16-bit speech, the format avsd sends.
pub fn speech16(dir: &Path, stem: &str, text: &str) -> Vec<u8> {
    speech_raw(
        dir,
        stem,
        text,
        &["-r", "16000", "-c", "1", "-e", "signed-integer", "-b", "16"],
    )
}

/// Write a file whose content a test may look at after a failure.
pub fn keep(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
}
