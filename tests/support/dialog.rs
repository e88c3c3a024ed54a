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
//! Both are the shared FIFO ends of [`crate::fifo`] ([`Feed`], [`Drain`])
//! on a one-page pipe held open read-write, so ALSA's opens never block and
//! a closed device never reads as end of file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avsctl::proxy::{AuthorizationProxy, DialogProxy};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::companion::WAIT;
use crate::fifo::{Clocked, Drain, Feed, FeedQueue, Kept, ONE_PAGE, mkfifo, open_rw};
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

/// Makes the FIFO at `path` and opens it read-write, non-blocking, one
/// page of pipe (see [`ONE_PAGE`]).
fn make_and_open(path: &Path) -> File {
    mkfifo(path);
    open_rw(path, Some(ONE_PAGE)).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Feeds a capture FIFO on a 10 ms clock (see the module doc).
pub struct Mic {
    queue: FeedQueue,
    _clock: Clocked<Feed>,
}

impl Mic {
    /// Feed `path` (made here) with `chunk` bytes per 10 ms.
    pub fn new(path: &Path, chunk: usize) -> Mic {
        let (feed, queue) = Feed::new(chunk);
        Mic {
            queue,
            _clock: Clocked::start(make_and_open(path), feed),
        }
    }

    /// Speak `pcm` (in the FIFO's format) as soon as the previous speech is
    /// out; the receiver fires once it has all been written.
    pub fn say(&self, pcm: Vec<u8>) -> tokio::sync::oneshot::Receiver<()> {
        self.queue.say(pcm)
    }
}

/// Drains a playback FIFO on a 10 ms clock and keeps every byte.
pub struct Speaker {
    /// Every byte ALSA played.
    pub bytes: Arc<Mutex<Vec<u8>>>,
    /// Bytes read since the first non-zero one (how much sound was played).
    sound: watch::Receiver<usize>,
    _clock: Clocked<Drain>,
}

impl Speaker {
    /// Drain `path` (made here) at `per_10ms` bytes per 10 ms.
    pub fn new(path: &Path, per_10ms: usize) -> Speaker {
        let kept = Kept::default();
        let bytes = kept.0.clone();
        let (drain, sound) = Drain::new(per_10ms, Box::new(kept));
        Speaker {
            bytes,
            sound,
            _clock: Clocked::start(make_and_open(path), drain),
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

/// Whether process `pid` holds a descriptor of `path` (ALSA's file plugin
/// opens the FIFO while the capture device is open).
pub fn holds(pid: i32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// Wait until `pid` holds `path` or not (`want`): the descriptor table has
/// no event to wait for, so it is read on a short tick, with a generous limit.
pub async fn wait_holds(pid: i32, path: &Path, want: bool) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while holds(pid, path) != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "avsd {} {}",
        if want { "never opened" } else { "still holds" },
        path.display()
    );
}
