//! Runs the wake-word engine over raw audio files (16 kHz mono s16le) and
//! prints what it heard: for scripts/bench (speed, detection rate) and for
//! trying a model by hand.
//!
//!   wakeword-file [--probabilities] MODEL.json FILE.raw...
//!
//! Prints one line per file: its name, the number of detections and the
//! end sample and score of each; with --probabilities, every model call.

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
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let audio: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        ww.reset();
        let mut found = Vec::new();
        // 20 ms periods, as a capture thread would hand them over.
        for chunk in audio.chunks(320) {
            ww.process(chunk, |ev| match ev {
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
