//! `radio-soak`: avsd playing radio for a long while, for scripts/soak.
//! The whole system as the tests start it (stand-ins, companion, private
//! bus, a logged-in avsd whose speaker is a FIFO-backed ALSA PCM drained
//! at real time), a Play of the stand-in's endless ICY MP3 stream, then
//! every minute avsd's RSS, its open file descriptors and how much audio
//! it played; at the end the growth of each from the first minute. Fails
//! (exit 1) when the playback stopped or failed, or a minute played less
//! than half a minute of audio.
//!
//!   radio-soak MINUTES

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use support::dialog::{Rig, SPEAKER_10MS};
use support::fifo::{Clocked, Drain, ONE_PAGE, mkfifo, open_rw};

const AUDIO: &str = "playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";
/// Bytes per second at the speaker (48 kHz stereo i16).
const BYTES_PER_S: f64 = 48_000.0 * 4.0;

/// avsd's resident memory in KiB and its open file descriptors.
fn sample(pid: i32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

fn main() -> ExitCode {
    let minutes = match std::env::args().nth(1).map(|a| a.parse::<u64>()) {
        Some(Ok(m)) if m > 0 => m,
        _ => {
            eprintln!("usage: radio-soak MINUTES (a whole number above 0)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("radio-soak: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(soak(minutes))
}

async fn soak(minutes: u64) -> ExitCode {
    let rig = Rig::start(AUDIO).await;
    let spk = rig.path("spk.fifo");
    mkfifo(&spk);
    let fifo = match open_rw(&spk, Some(ONE_PAGE)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("radio-soak: cannot open {}: {e}", spk.display());
            return ExitCode::from(1);
        }
    };
    // Drained at real time into nothing: an hour of audio is not kept.
    let (drain, played) = Drain::new(SPEAKER_10MS, Box::new(std::io::sink()));
    let _clock = Clocked::start(fifo, drain);

    let url = format!("{}/icy", rig.avs.media);
    let play = json!({"directive": {
        "header": {"namespace": "AudioPlayer", "name": "Play", "messageId": "soak-play"},
        "payload": {"playBehavior": "REPLACE_ALL", "audioItem": {"audioItemId": "radio",
            "stream": {"url": url, "offsetInMilliseconds": 0, "token": "radio"}}}
    }});
    rig.avs.push("", play).await;
    rig.avs_wait("event=AudioPlayer.PlaybackStarted").await;
    let started = Instant::now();
    let pid = rig.avsd.pid();
    println!("radio-soak: avsd (pid {pid}) plays {url}; sampling every minute for {minutes} min");
    println!("minute  rss_kib  fds  played_s");
    let mut samples = Vec::new();
    for minute in 1..=minutes {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        let (rss, fds) = sample(pid);
        let secs = *played.borrow() as f64 / BYTES_PER_S;
        println!("{minute:>6} {rss:>8} {fds:>4} {secs:>9.1}");
        samples.push((rss, fds, secs));
    }
    let stats = rig.avs.stats().await;
    let ended: Vec<String> = stats["audio_player"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.ends_with("Failed") || n.ends_with("Stopped") || n.ends_with("Finished"))
        .map(str::to_string)
        .collect();
    let stutters = stats["audio_player"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == "AudioPlayer.PlaybackStutterStarted")
        .count();
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let peak = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let wall = started.elapsed().as_secs_f64();
    println!(
        "growth from minute 1 to {minutes}: RSS {:+} KiB ({} -> {} KiB, peak {} KiB), fds {:+} ({} -> {}); \
         played {:.1} s of audio in {:.1} s, {stutters} stutters",
        last.0 as i64 - first.0 as i64,
        first.0,
        last.0,
        peak,
        last.1 as i64 - first.1 as i64,
        first.1,
        last.1,
        last.2,
        wall
    );
    println!(
        "{}",
        json!({"minutes": minutes, "rss_kib": samples.iter().map(|s| s.0).collect::<Vec<_>>(),
               "fds": samples.iter().map(|s| s.1).collect::<Vec<_>>(),
               "rss_growth_kib": last.0 as i64 - first.0 as i64,
               "fd_growth": last.1 as i64 - first.1 as i64,
               "played_s": last.2, "wall_s": wall, "ended": ended, "stutters": stutters})
    );
    // The speaker drains at real time, so each minute plays about a
    // minute of audio; the drain's clock restarts rather than catching up
    // after a late tick, so a loaded machine plays somewhat less, never
    // half as much while the radio goes on.
    let mut before = 0.0;
    let stalled = samples.iter().any(|s| {
        let slow = s.2 - before < 30.0;
        before = s.2;
        slow
    });
    if !ended.is_empty() || stalled {
        eprintln!(
            "radio-soak: the radio did not play throughout: events {ended:?}, {:.1} s played in \
             {wall:.1} s",
            last.2
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
