//! `media-bench`: what playing one AudioPlayer stream costs, for
//! scripts/bench. It fetches URL with avsd's media module and decodes and
//! resamples it with the speaker's decoder, at real time (the decoded
//! audio is taken no faster than a 48 kHz output would take it, half a
//! second ahead as the speaker's ring is), and prints one JSON line: the
//! process's CPU time over the wall time after a second's warm-up, as a
//! percentage of one core, and its peak RSS. No ALSA and no mixer: those
//! cost the same whatever plays.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use avsd::audio::media_decode::decode_media_blocking;
use avsd::media::{self, Limits, MediaClient};

const USAGE: &str = "usage: media-bench URL CA_FILE SECONDS";
/// The output rate the decoder resamples to.
const RATE: u32 = 48_000;
/// How far decoding may run ahead of real time (the speaker's ring).
const AHEAD: Duration = Duration::from_millis(500);
/// Left out of the figure: TLS set-up, probing, the first buffer.
const WARM_UP: Duration = Duration::from_secs(1);

/// CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given and cannot fail
    // for RUSAGE_SELF.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, ca, secs] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(secs) = secs.parse::<f64>() else {
        eprintln!("media-bench: {secs:?} is not a number of seconds\n{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("media-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match MediaClient::new(Some(std::path::Path::new(ca))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("media-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let stream = runtime.block_on(async { media::open(url, 0, &client, Limits::default()) });
    let (audio, _events) = stream.split();
    let start = Instant::now();
    let mut mark: Option<(Instant, Duration, u64)> = None;
    let mut samples = 0u64;
    let total = Duration::from_secs_f64(secs);
    let result = decode_media_blocking(audio, RATE, |block| {
        samples += block.len() as u64;
        let played = Duration::from_secs_f64(samples as f64 / f64::from(RATE));
        let now = start.elapsed();
        if played > now + AHEAD {
            std::thread::sleep(played - now - AHEAD);
        }
        if mark.is_none() && start.elapsed() >= WARM_UP {
            mark = Some((Instant::now(), cpu_time(), samples));
        }
        start.elapsed() < total
    });
    if let Err(e) = result {
        eprintln!("media-bench: {url}: {e}");
        return ExitCode::from(1);
    }
    let Some((at, cpu, from)) = mark else {
        eprintln!("media-bench: {url} ended before the warm-up was over");
        return ExitCode::from(1);
    };
    let wall = at.elapsed().as_secs_f64();
    let used = (cpu_time() - cpu).as_secs_f64();
    let audio_s = (samples - from) as f64 / f64::from(RATE);
    println!(
        "{{\"url\": \"{url}\", \"wall_s\": {wall:.2}, \"audio_s\": {audio_s:.2}, \"cpu_percent\": {:.3}, \"peak_rss_kib\": {}}}",
        used / wall * 100.0,
        peak_rss_kib()
    );
    drop(runtime);
    ExitCode::SUCCESS
}
