//! Runs the wake-word engine over raw audio files (16 kHz mono s16le) and
//! prints what it heard: for scripts/bench (speed, detection rate) and for
//! trying a model by hand.
//!
//!   wakeword-file [--probabilities] MODEL.json FILE.raw...
//!
//! Prints one line per file: its name, the number of detections and the
//! end sample and score of each; with --probabilities, every model call.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use wakeword::{Event, WakeWord};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.first().is_some_and(|a| a == "--probabilities");
    if verbose {
        args.remove(0);
    }
    let Some((model, files)) = args.split_first() else {
        eprintln!("usage: wakeword-file [--probabilities] MODEL.json FILE.raw...");
        return ExitCode::from(2);
    };
    let mut ww = match WakeWord::open(Path::new(model)) {
        Ok(ww) => ww,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bytes = [0u8; 640];
    let mut period = [0i16; 320];
    for file in files {
        let mut input = match std::fs::File::open(file) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        ww.reset();
        let mut found = Vec::new();
        // 20 ms periods, as a capture thread would hand them over (a short
        // last one is dropped); streamed, so memory does not grow with the
        // file and the bench's RSS is the engine's.
        while input.read_exact(&mut bytes).is_ok() {
            for (s, b) in period.iter_mut().zip(bytes.chunks_exact(2)) {
                *s = i16::from_le_bytes([b[0], b[1]]);
            }
            ww.process(&period, |ev| match ev {
                Event::Inference {
                    end_sample,
                    probability,
                    mean,
                } if verbose => {
                    println!(
                        "{file} {end_sample} {probability:.6} {:.6}",
                        mean.unwrap_or(0.0)
                    )
                }
                Event::Detected(d) => found.push(format!("{}:{:.3}", d.end_sample, d.score)),
                _ => {}
            });
        }
        println!("{file} detections={} {}", found.len(), found.join(" "));
    }
    ExitCode::SUCCESS
}
