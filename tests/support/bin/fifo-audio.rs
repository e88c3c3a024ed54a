//! `fifo-audio`: real-time ends for ALSA `file` PCMs backed by FIFOs, for
//! scripts/demo and scripts/bench; the tests' own FIFO ends
//! (`support::fifo`) on the command line.
//!
//! ALSA's `file` plugin over a `null` slave is unpaced: it reads and writes
//! its file as fast as it can. A FIFO with one of these on the other end
//! runs it at real time, like a sound card would.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

use support::fifo::{Clocked, Drain, Feed, Loop, ONE_PAGE, Tick, open_rw};

const USAGE: &str = "\
usage:
  fifo-audio feed FIFO RAW CHUNK   speak RAW into FIFO, CHUNK bytes per 10 ms,
                                   then silence; only while ALSA reads
                                   (nothing piles up meanwhile)
  fifo-audio loop FIFO RAW CHUNK   like a sound card, for scripts/bench: RAW
                                   over and over, CHUNK bytes per 10 ms, and a
                                   period nobody read by the next tick is
                                   thrown away, so a capture that opens finds
                                   no stale audio
  fifo-audio drain FIFO OUT BYTES  read FIFO at BYTES per 10 ms into OUT

FIFO must exist (mkfifo). Each holds it open read-write, so ALSA's opens never
block and a closed device never reads as end of file. They run until killed.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, fifo, path, size] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let size: usize = match size.parse() {
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!("fifo-audio: {size:?} is not a positive byte count\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(mode, Path::new(fifo), Path::new(path), size) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fifo-audio {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mode: &str, fifo: &Path, path: &Path, size: usize) -> Result<(), String> {
    let read_raw = || {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the recording {}: {e}", path.display()))
    };
    match mode {
        "feed" => {
            let (feed, queue) = Feed::new(size);
            // Nobody waits for the end of the speech: silence follows.
            drop(queue.say(read_raw()?));
            forever(fifo, feed).map(drop)
        }
        "loop" => forever(fifo, Loop::new(read_raw()?, size)).map(drop),
        "drain" => {
            let out =
                File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let (drain, _) = Drain::new(size, Box::new(out));
            let drain = forever(fifo, drain)?;
            match drain.failed() {
                Some(e) => Err(format!(
                    "draining {} into {} failed: {e}",
                    fifo.display(),
                    path.display()
                )),
                None => Err(format!("{} closed", fifo.display())),
            }
        }
        other => Err(format!("no mode {other:?}\n\n{USAGE}")),
    }
}

/// Runs `policy` on the FIFO until it ends (it ends only on an error).
fn forever<P: Tick>(fifo: &Path, policy: P) -> Result<P, String> {
    let file = open_rw(fifo, Some(ONE_PAGE)).map_err(|e| {
        format!(
            "cannot open the FIFO {} ({e}); make it first with mkfifo",
            fifo.display()
        )
    })?;
    Ok(Clocked::start(file, policy).join())
}
