//! Real-time ends for ALSA `file` PCMs backed by FIFOs, the one
//! implementation the audio tests, the dialog tests and the scripts'
//! `fifo-audio` program share.
//!
//! ALSA's `file` plugin over a `null` slave is unpaced: it reads and writes
//! its file as fast as it can. A FIFO with a [`Clocked`] end on the other
//! side runs it at real time, as a sound card would. The clock thread is
//! one; what it does each 10 ms is a small [`Tick`] policy:
//! - [`Pieces`]: writes a recording once, a piece per tick, then closes
//!   the FIFO (end of file for ALSA);
//! - [`Feed`]: speaks queued recordings, silence in between, and tops up
//!   only a nearly empty pipe so nothing piles up while nobody captures;
//! - [`Loop`]: a recording over and over, and throws away a period nobody
//!   read by the next tick, so a capture that opens finds no stale audio;
//! - [`Drain`]: reads a playback FIFO at a fixed rate into a sink and
//!   counts the bytes of sound (from the first non-zero byte on).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

/// The clock's period: ALSA's periods in the tests and scripts are 10 ms.
pub const TICK: Duration = Duration::from_millis(10);

/// One page of pipe: what ALSA writes is heard within a few ms, as on a
/// sound card, not up to 64 KiB later (a player's Finished would then come
/// long before its last sample is "heard"); and what is fed waits for ALSA
/// to read it instead of piling up.
pub const ONE_PAGE: usize = 4096;

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

/// Opens the FIFO at `path` read-write and non-blocking: ALSA's opens of
/// the other end never block, a closed device never reads as end of file,
/// and a tick never waits on a full or empty pipe. With `pipe_size`, the
/// pipe is resized to that many bytes (see [`ONE_PAGE`]).
pub fn open_rw(path: &Path, pipe_size: Option<usize>) -> io::Result<File> {
    let fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if let Some(size) = pipe_size {
        let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ on a FIFO we own; no pointers involved.
        if unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, size) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fifo)
}

/// Bytes waiting in a pipe (FIONREAD); 0 when that cannot be read.
pub fn queued(fifo: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// What a [`Clocked`] FIFO end does every 10 ms.
pub trait Tick: Send + 'static {
    /// One tick's work on the FIFO; `Break` ends the clock and closes the FIFO.
    fn tick(&mut self, fifo: &mut File) -> ControlFlow<()>;
}

/// A FIFO end with a thread that runs a [`Tick`] policy on it every 10 ms,
/// until the policy ends it or the clock is stopped (or dropped).
pub struct Clocked<P: Tick> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<P>>,
}

impl<P: Tick> Clocked<P> {
    /// Runs `policy` on the already open `fifo`.
    pub fn start(fifo: File, policy: P) -> Self {
        Self::open_then_start(move || fifo, policy)
    }

    /// Runs `policy` on what `open` returns; `open` runs in the clock's
    /// thread, so it may block (a read-only open waits for ALSA's).
    pub fn open_then_start(open: impl FnOnce() -> File + Send + 'static, mut policy: P) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut fifo = open();
            let mut next = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                if policy.tick(&mut fifo).is_break() {
                    break;
                }
                // Real time from here on: after a late tick (a blocking read
                // waiting for ALSA, a loaded machine) the clock restarts
                // instead of catching up in a burst.
                next += TICK;
                match next.checked_duration_since(Instant::now()) {
                    Some(wait) => thread::sleep(wait),
                    None => next = Instant::now(),
                }
            }
            drop(fifo);
            policy
        });
        Clocked {
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the policy ends the clock; returns the policy.
    pub fn join(mut self) -> P {
        let thread = self.thread.take().expect("joined once");
        thread.join().expect("the FIFO clock thread")
    }

    /// Stops the clock after the current tick; returns the policy.
    pub fn stop(self) -> P {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }
}

impl<P: Tick> Drop for Clocked<P> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Not while unwinding: a tick blocked on a FIFO ALSA never opened
        // would turn a test's failure into a hang.
        if let Some(t) = self.thread.take()
            && !thread::panicking()
        {
            let _ = t.join();
        }
    }
}

/// Writes what of `data` fits without blocking; returns how many bytes went
/// in (0 when the pipe is full).
fn write_some(fifo: &mut File, data: &[u8]) -> io::Result<usize> {
    match fifo.write(data) {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// Writes a recording once, `chunk` bytes a tick, starting on a signal,
/// then ends the clock: closing the only writer gives ALSA end of file
/// (then silence). The FIFO should keep its default size, so a capture
/// that starts late finds the recording waiting, nothing lost.
pub struct Pieces {
    data: Vec<u8>,
    chunk: usize,
    at: usize,
    go: mpsc::Receiver<()>,
    started: Option<Instant>,
}

impl Pieces {
    /// The policy and the sender that starts it; dropping the sender
    /// before sending ends it unstarted.
    pub fn new(data: Vec<u8>, chunk: usize) -> (Self, mpsc::Sender<()>) {
        let (go, started) = mpsc::channel();
        let pieces = Pieces {
            data,
            chunk,
            at: 0,
            go: started,
            started: None,
        };
        (pieces, go)
    }

    /// When the first piece went in, if it did.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }
}

impl Tick for Pieces {
    fn tick(&mut self, fifo: &mut File) -> ControlFlow<()> {
        if self.started.is_none() {
            match self.go.try_recv() {
                Ok(()) => {}
                Err(mpsc::TryRecvError::Empty) => return ControlFlow::Continue(()),
                Err(mpsc::TryRecvError::Disconnected) => return ControlFlow::Break(()),
            }
        }
        if self.at >= self.data.len() {
            return ControlFlow::Break(());
        }
        let end = (self.at + self.chunk).min(self.data.len());
        let first = self.started.is_none().then(Instant::now);
        // Pieces of at most PIPE_BUF bytes go in whole or not at all, so
        // ALSA's period-sized reads never see half a period; a full pipe
        // means the piece waits for the next tick.
        match write_some(fifo, &self.data[self.at..end]) {
            Ok(0) => {}
            Ok(n) => {
                self.at += n;
                self.started = self.started.or(first);
            }
            Err(_) => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }
}

/// Fires once a recording handed to [`Feed::say`] has all been written.
pub type Said = oneshot::Sender<()>;

/// Speaks queued recordings into a capture FIFO, `chunk` bytes a tick, and
/// silence when there is nothing to say. It writes only while fewer than
/// two chunks wait in the pipe: with nobody reading nothing is written, so
/// no stale audio waits for the next open and what the reader gets is
/// close to real time. Use it on a [`ONE_PAGE`] pipe.
pub struct Feed {
    queue: mpsc::Receiver<(Vec<u8>, Option<Said>)>,
    chunk: usize,
    speech: Vec<u8>,
    at: usize,
    done: Option<Said>,
}

/// Queues recordings for a running [`Feed`].
#[derive(Clone)]
pub struct FeedQueue(mpsc::Sender<(Vec<u8>, Option<Said>)>);

impl FeedQueue {
    /// Speaks `pcm` (in the FIFO's format) once the recordings before it
    /// are out; the receiver fires once it has all been written.
    pub fn say(&self, pcm: Vec<u8>) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.0.send((pcm, Some(tx))).expect("the feed's clock runs");
        rx
    }
}

impl Feed {
    /// The policy, `chunk` bytes a tick, and its queue.
    pub fn new(chunk: usize) -> (Self, FeedQueue) {
        let (tx, queue) = mpsc::channel();
        let feed = Feed {
            queue,
            chunk,
            speech: Vec::new(),
            at: 0,
            done: None,
        };
        (feed, FeedQueue(tx))
    }
}

impl Tick for Feed {
    fn tick(&mut self, fifo: &mut File) -> ControlFlow<()> {
        if self.at >= self.speech.len() {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(());
            }
            if let Ok((pcm, tx)) = self.queue.try_recv() {
                (self.speech, self.at, self.done) = (pcm, 0, tx);
            }
        }
        if queued(fifo) >= 2 * self.chunk {
            return ControlFlow::Continue(());
        }
        let end = (self.at + self.chunk).min(self.speech.len());
        let mut piece = self.speech[self.at..end].to_vec();
        piece.resize(self.chunk, 0);
        self.at = end;
        // A piece the pipe has no room for is dropped, as a microphone's
        // period nobody takes.
        let _ = write_some(fifo, &piece);
        ControlFlow::Continue(())
    }
}

/// Plays a recording into a capture FIFO over and over, `chunk` bytes a
/// tick, like a sound card: what nobody read by the next tick is thrown
/// away, so a capture that opens finds no stale audio.
pub struct Loop {
    recording: Vec<u8>,
    chunk: usize,
    at: usize,
    stale: Vec<u8>,
}

impl Loop {
    /// The policy; `recording` is padded with silence to whole chunks.
    pub fn new(mut recording: Vec<u8>, chunk: usize) -> Self {
        let chunk = chunk.max(1);
        let padded = recording.len().div_ceil(chunk).max(1) * chunk;
        recording.resize(padded, 0);
        Loop {
            recording,
            chunk,
            at: 0,
            stale: Vec::new(),
        }
    }
}

impl Tick for Loop {
    fn tick(&mut self, fifo: &mut File) -> ControlFlow<()> {
        let stale = queued(fifo);
        if stale > 0 {
            self.stale.resize(stale, 0);
            let _ = fifo.read(&mut self.stale);
        }
        let _ = write_some(fifo, &self.recording[self.at..self.at + self.chunk]);
        self.at = (self.at + self.chunk) % self.recording.len();
        ControlFlow::Continue(())
    }
}

/// Reads a playback FIFO at `per_tick` bytes a tick into a sink, which
/// paces ALSA's otherwise unpaced `null` device to real time. Ends the
/// clock at end of file (ALSA closed a FIFO opened read-only) or when the
/// FIFO or the sink fails.
pub struct Drain {
    buf: Vec<u8>,
    sink: Box<dyn Write + Send>,
    total: usize,
    /// Where sound starts: ALSA gets silence until a player's first frame.
    sound_from: Option<usize>,
    sound: watch::Sender<usize>,
    failed: Option<io::Error>,
}

impl Drain {
    /// The policy, and a counter of the bytes read since the first
    /// non-zero one (how much sound was played).
    pub fn new(per_tick: usize, sink: Box<dyn Write + Send>) -> (Self, watch::Receiver<usize>) {
        let (sound, count) = watch::channel(0);
        let drain = Drain {
            buf: vec![0u8; per_tick],
            sink,
            total: 0,
            sound_from: None,
            sound,
            failed: None,
        };
        (drain, count)
    }

    /// Bytes read since the first non-zero one.
    pub fn sound(&self) -> usize {
        *self.sound.borrow()
    }

    /// What failed, if the FIFO or the sink did.
    pub fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    fn keep(&mut self, n: usize) -> io::Result<()> {
        let piece = &self.buf[..n];
        if self.sound_from.is_none()
            && let Some(i) = piece.iter().position(|b| *b != 0)
        {
            self.sound_from = Some(self.total + i);
        }
        self.sink.write_all(piece)?;
        self.sink.flush()?;
        self.total += n;
        // After the sink: once the count says so, the bytes are there.
        if let Some(from) = self.sound_from {
            self.sound.send_replace(self.total - from);
        }
        Ok(())
    }
}

impl Tick for Drain {
    fn tick(&mut self, fifo: &mut File) -> ControlFlow<()> {
        // A whole tick's worth: a blocking FIFO waits for ALSA to write
        // it; a non-blocking one gives what is there.
        let mut got = 0;
        let mut end = false;
        while got < self.buf.len() {
            match fifo.read(&mut self.buf[got..]) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.failed = Some(e);
                    end = true;
                    break;
                }
            }
        }
        if let Err(e) = self.keep(got) {
            self.failed = Some(e);
            return ControlFlow::Break(());
        }
        if end {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// A [`Drain`] sink that keeps every byte, shared with the test.
#[derive(Clone, Default)]
pub struct Kept(pub Arc<Mutex<Vec<u8>>>);

impl Write for Kept {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("a reader of the kept bytes panicked"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
