//! Rig for the audio tests: real ALSA through its `file` plugin, with no
//! sound card.
//!
//! ALSA reads its configuration once per process, so every test runs its
//! body in a fresh copy of this test binary (`sandboxed`), started with
//! `ALSA_CONFIG_PATH` pointing at an asound.conf in the test's own temp dir.
//! The parent bounds the child with a timeout, so a hang fails the test
//! instead of stalling the suite.
//!
//! The PCMs, all over a `null` slave (see shared/design/testing.md):
//! - `mic16`, `mic48`: capture reading `DIR/mic16.fifo` / `DIR/mic48.fifo`.
//!   FIFOs, written on a clock by [`FifoWriter`], because a `null` slave is
//!   unpaced and would hand over a regular file faster than real time.
//! - `micfail`: capture of `/dev/zero` whose copy goes to `DIR/tee.fifo`;
//!   closing that FIFO's only reader makes ALSA's read fail mid-stream.
//! - `spk`: playback into `DIR/spk.fifo`, read on a clock by [`FifoReader`].

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use crate::fifo::mkfifo;
use crate::fifo::{Clocked, Drain, Kept, Pieces, TICK, Tick, open_rw};

const CHILD_ENV: &str = "AVSD_AUDIO_SANDBOX";
const DIR_ENV: &str = "AVSD_AUDIO_DIR";
/// Longest a sandboxed test may run before it counts as hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Defines a `#[test]` whose body runs in a child process with its own ALSA
/// configuration; the body gets the test's temp dir.
#[macro_export]
macro_rules! alsa_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            $crate::audio::sandboxed(stringify!($name), $body);
        }
    };
}

/// Runs `body` in a child process (see the module doc). In the child itself,
/// runs it directly.
pub fn sandboxed(name: &str, body: impl FnOnce(&Path)) {
    if let Ok(which) = std::env::var(CHILD_ENV) {
        if which == name {
            let dir = PathBuf::from(std::env::var(DIR_ENV).expect("AVSD_AUDIO_DIR set"));
            body(&dir);
        }
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("avsd-audio")
        .tempdir()
        .expect("temp dir");
    let conf = dir.path().join("asound.conf");
    std::fs::write(&conf, asound_conf(dir.path())).expect("write asound.conf");
    let exe = std::env::current_exe().expect("current test binary");
    let child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env(DIR_ENV, dir.path())
        .env("ALSA_CONFIG_PATH", &conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sandboxed test");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(out) => out.expect("wait for the sandboxed test"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{name}: hung for more than {CHILD_TIMEOUT:?} (killed)");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Show the child's story (measurements included) under the parent's test.
    println!("--- {name} (child stdout) ---\n{stdout}\n--- child stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "{name} failed in its sandbox: {}",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{name}: the child ran no test; output above"
    );
}

/// The asound.conf of one test (see the module doc).
pub fn asound_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"pcm.mic16 {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/mic16.fifo" format "raw" hint {{ show on description "test mic, 16 kHz mono s16" }} }}
pcm.mic48 {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/mic48.fifo" format "raw" hint {{ show on description "test mic, 48 kHz stereo f32" }} }}
pcm.micfail {{ type file slave.pcm {{ type null }} file "{d}/tee.fifo" infile "/dev/zero" format "raw" hint {{ show on description "test mic that fails" }} }}
pcm.spk {{ type file slave.pcm {{ type null }} file "{d}/spk.fifo" format "raw" hint {{ show on description "test speaker" }} }}
pcm.!default {{ type asym capture.pcm "mic16" playback.pcm "spk" }}
"#
    )
}

/// Runs a command of the Debian test tools, failing with the fix when it is missing.
pub fn tool(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {cmd} ({e}): install the audio test tools with scripts/test-audio-deps \
             (Debian packages: espeak-ng sox libsox-fmt-mp3 lame)"
        )
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// sox's conversion of raw 48 kHz stereo f32 to raw 16 kHz mono s16le: the
/// reference avsd's capture path is compared with.
pub fn reference_16k(raw48: &Path, ref16: &Path) {
    let (from, to) = (path_str(raw48), path_str(ref16));
    let f32_48k = ["-r", "48000", "-c", "2", "-e", "floating-point", "-b", "32"];
    let s16_16k = ["-r", "16000", "-c", "1", "-e", "signed-integer", "-b", "16"];
    let mut args = vec!["-t", "raw"];
    args.extend_from_slice(&f32_48k);
    args.extend_from_slice(&["-L", from, "-t", "raw"]);
    args.extend_from_slice(&s16_16k);
    args.extend_from_slice(&["-L", to]);
    tool("sox", &args);
}

/// Speaks `text` into `DIR/<stem>.wav` with espeak-ng; returns the path.
pub fn speech_wav(dir: &Path, stem: &str, text: &str) -> PathBuf {
    let wav = dir.join(format!("{stem}.wav"));
    tool("espeak-ng", &["-s", "150", "-w", path_str(&wav), text]);
    wav
}

/// The path as &str (temp paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Writes `data` into a FIFO in `chunk`-byte pieces, one per 10 ms, from
/// its own clock ([`Pieces`]). It holds the FIFO open read-write so that
/// neither ALSA's probe opens nor its own open ever block, and it starts
/// writing on [`go`](Self::go).
pub struct FifoWriter {
    go: mpsc::Sender<()>,
    clock: Clocked<Pieces>,
}

impl FifoWriter {
    /// Prepares the writer; nothing is written before `go`. The clock is
    /// the shared 10 ms one, so `interval` must be [`TICK`].
    pub fn new(path: &Path, data: Vec<u8>, chunk: usize, interval: Duration) -> Self {
        assert_eq!(interval, TICK, "the FIFO clock ticks every {TICK:?}");
        mkfifo(path);
        let fifo = open_rw(path, None).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let (pieces, go) = Pieces::new(data, chunk);
        Self {
            go,
            clock: Clocked::start(fifo, pieces),
        }
    }

    /// Starts writing.
    pub fn go(&self) {
        let _ = self.go.send(());
    }

    /// Waits for the writer; returns when it wrote its first piece.
    pub fn join(self) -> Option<Instant> {
        let Self { go, clock } = self;
        drop(go);
        clock.join().started()
    }
}

/// Reads a playback FIFO on a clock of `bytes_per_10ms` each 10 ms, which
/// paces ALSA's otherwise unpaced `null` device to real time. Collects all
/// bytes until ALSA closes the PCM: unlike the dialog rig's ends, it opens
/// the FIFO read-only, so ALSA's close reads as end of file.
pub struct FifoReader {
    pace: mpsc::Sender<Pace>,
    clock: Clocked<Paced>,
    bytes: Kept,
}

struct Pace {
    per_tick: usize,
    mark: usize,
    hang_up: bool,
    /// At the mark, stop reading but keep the FIFO open (until `join`).
    stall: bool,
    /// Fires at the mark (taken then).
    reached: Option<tokio::sync::oneshot::Sender<()>>,
}

/// [`FifoReader`]'s policy: nothing until paced, then a [`Drain`] with a
/// mark in the sound.
struct Paced {
    pace: mpsc::Receiver<Pace>,
    sink: Kept,
    running: Option<(Drain, Pace)>,
    stalled: bool,
}

impl Tick for Paced {
    fn tick(&mut self, fifo: &mut File) -> ControlFlow<()> {
        if self.running.is_none() || self.stalled {
            // Paced once; after that only `join`, dropping the sender, counts.
            match self.pace.try_recv() {
                Ok(pace) if self.running.is_none() => {
                    let (drain, _) = Drain::new(pace.per_tick, Box::new(self.sink.clone()));
                    self.running = Some((drain, pace));
                }
                Err(mpsc::TryRecvError::Disconnected) => return ControlFlow::Break(()),
                _ => return ControlFlow::Continue(()),
            }
        }
        let Some((drain, pace)) = self.running.as_mut() else {
            return ControlFlow::Continue(());
        };
        drain.tick(fifo)?;
        if drain.sound() >= pace.mark
            && let Some(reached) = pace.reached.take()
        {
            let _ = reached.send(());
            if pace.hang_up {
                // Closing the only reader: ALSA's next write fails.
                return ControlFlow::Break(());
            }
            // ALSA's writes block once the pipe is full; the FIFO closes
            // when `join` drops the sender.
            self.stalled = pace.stall;
        }
        ControlFlow::Continue(())
    }
}

impl FifoReader {
    /// Makes the FIFO and opens it (in the clock's thread: the open waits
    /// for ALSA).
    pub fn new(path: &Path) -> Self {
        mkfifo(path);
        let path = path.to_path_buf();
        let (pace, pace_rx) = mpsc::channel::<Pace>();
        let bytes = Kept::default();
        let policy = Paced {
            pace: pace_rx,
            sink: bytes.clone(),
            running: None,
            stalled: false,
        };
        let open = move || File::open(&path).expect("open speaker FIFO");
        Self {
            pace,
            clock: Clocked::open_then_start(open, policy),
            bytes,
        }
    }
    /// Starts reading at this many bytes per 10 ms (the device format's).
    /// The receiver fires once `mark` bytes were read from the first non-zero
    /// byte on (from where sound starts); with `hang_up` the
    /// reader then closes the FIFO, as if the speaker went away.
    pub fn pace(
        &self,
        bytes_per_10ms: usize,
        mark: usize,
        hang_up: bool,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (reached, rx) = tokio::sync::oneshot::channel();
        let _ = self.pace.send(Pace {
            per_tick: bytes_per_10ms,
            mark,
            hang_up,
            stall: false,
            reached: Some(reached),
        });
        rx
    }

    /// Like [`FifoReader::pace`], but at `mark` the reader stops reading
    /// and keeps the FIFO open, as a speaker whose driver is stuck.
    pub fn pace_then_stall(&self, bytes_per_10ms: usize, mark: usize) {
        let (reached, _) = tokio::sync::oneshot::channel();
        let _ = self.pace.send(Pace {
            per_tick: bytes_per_10ms,
            mark,
            hang_up: false,
            stall: true,
            reached: Some(reached),
        });
    }

    /// All bytes ALSA wrote, once it closed the device.
    pub fn join(self) -> Vec<u8> {
        let Self { pace, clock, bytes } = self;
        drop(pace);
        clock.join();
        std::mem::take(&mut *bytes.0.lock().expect("the reader's bytes"))
    }
}

/// Little-endian i16 samples as floats in [-1, 1).
pub fn s16le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
        .collect()
}

/// Little-endian f32 samples.
pub fn f32le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Root mean square.
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// First and last index whose magnitude exceeds `threshold`.
pub fn active_span(x: &[f32], threshold: f32) -> Option<(usize, usize)> {
    let first = x.iter().position(|v| v.abs() > threshold)?;
    let last = x.iter().rposition(|v| v.abs() > threshold)?;
    Some((first, last))
}

/// Averages blocks of `factor` samples (a crude low-pass and decimation, to
/// keep the correlation search cheap in a debug build).
pub fn decimate(x: &[f32], factor: usize) -> Vec<f32> {
    x.chunks(factor)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect()
}

/// The best normalized cross-correlation of `a` and `b` over lags in
/// `-max_lag..=max_lag` (b shifted by lag), and that lag.
pub fn best_correlation(a: &[f32], b: &[f32], max_lag: usize) -> (f64, isize) {
    let mut best = (f64::MIN, 0isize);
    let max_lag = max_lag as isize;
    for lag in -max_lag..=max_lag {
        let (mut dot, mut ea, mut eb) = (0f64, 0f64, 0f64);
        for (i, &x) in a.iter().enumerate() {
            let j = i as isize + lag;
            if j < 0 || j as usize >= b.len() {
                continue;
            }
            let y = b[j as usize];
            dot += f64::from(x) * f64::from(y);
            ea += f64::from(x) * f64::from(x);
            eb += f64::from(y) * f64::from(y);
        }
        if ea > 0.0 && eb > 0.0 {
            let c = dot / (ea * eb).sqrt();
            if c > best.0 {
                best = (c, lag);
            }
        }
    }
    best
}

/// A multi-threaded tokio runtime for a test body.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
