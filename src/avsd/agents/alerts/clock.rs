//! The wall clock alerts are scheduled on: one `timerfd` on
//! `CLOCK_REALTIME`, armed for the next alert only, with
//! `TFD_TIMER_CANCEL_ON_SET` so that a step of the clock (NTP after boot,
//! `date -s`) wakes it and the alert is re-armed against the new time;
//! and whether the clock can be trusted yet on a machine without a
//! real-time clock.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, clock_gettime,
    timerfd_create, timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What woke the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The time it was armed for has come.
    Due,
    /// Someone set the clock: re-arm against the new time.
    ClockStepped,
}

/// One wall-clock timer (see the module doc).
pub struct WallTimer {
    fd: AsyncFd<OwnedFd>,
}

/// Unix milliseconds now, as the daemon's clock reads it.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl WallTimer {
    /// A disarmed timer.
    pub fn new() -> io::Result<WallTimer> {
        let fd = timerfd_create(
            TimerfdClockId::Realtime,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the AsyncFd owns the descriptor (an `OwnedFd`, closed
        // only when the AsyncFd drops it), so it stays open and the same
        // for the AsyncFd's whole life, as `register_with_interest` asks.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(WallTimer { fd })
    }

    /// Fire at Unix millisecond `due_ms` (at once if it has passed), or
    /// never (`None`).
    pub fn arm(&self, due_ms: Option<i64>) -> io::Result<()> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = match due_ms {
            None => zero,
            Some(due) => {
                // The kernel's own reading of CLOCK_REALTIME plus the time
                // left by the daemon's clock: the two agree except where the
                // daemon's clock is shifted (libfaketime in the tests),
                // and then the alert still fires when the daemon's clock
                // says it is due.
                let kernel = clock_gettime(ClockId::Realtime);
                let left = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
                let mut sec = kernel.tv_sec + i64::try_from(left.as_secs()).unwrap_or(i64::MAX / 2);
                let mut nsec = kernel.tv_nsec + i64::from(left.subsec_nanos());
                if nsec >= 1_000_000_000 {
                    sec += 1;
                    nsec -= 1_000_000_000;
                }
                // All zeros would disarm it.
                if sec == 0 && nsec == 0 {
                    nsec = 1;
                }
                Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
            &spec,
        )?;
        Ok(())
    }

    /// Waits until the armed time comes or the clock is set.
    pub async fn wait(&self) -> io::Result<Wake> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            match rustix::io::read(self.fd.get_ref(), &mut buf) {
                Ok(_) => return Ok(Wake::Due),
                Err(rustix::io::Errno::CANCELED) => return Ok(Wake::ClockStepped),
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Where systemd-timesyncd says the clock has been synchronized.
pub const TIMESYNC_FLAG: &str = "/run/systemd/timesync/synchronized";
/// The real-time clock a machine that keeps time when off has.
pub const RTC_DEVICE: &str = "/dev/rtc0";

/// Whether the clock can be trusted for alerts: the machine keeps time
/// while off (`rtc` exists), or a time service has synchronized it (`flag`
/// exists: systemd-timesyncd writes it, and chrony's timesync hook does
/// too). A Raspberry Pi has no real-time clock and boots at the time it
/// last shut down, so an alarm could ring hours early.
pub fn synchronized(rtc: &Path, flag: &Path) -> bool {
    rtc.exists() || flag.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_the_wall_time_it_was_armed_for() {
        let timer = WallTimer::new().unwrap();
        let start = std::time::Instant::now();
        timer.arm(Some(now_ms() + 150)).unwrap();
        assert_eq!(timer.wait().await.unwrap(), Wake::Due);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(140), "{took:?}");
    }

    #[tokio::test]
    async fn a_past_time_fires_at_once() {
        let timer = WallTimer::new().unwrap();
        timer.arm(Some(now_ms() - 60_000)).unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), timer.wait()).await;
        assert_eq!(woke.unwrap().unwrap(), Wake::Due);
    }

    #[test]
    fn synchronized_by_an_rtc_or_the_timesync_flag() {
        let dir = tempfile::tempdir().unwrap();
        let rtc = dir.path().join("rtc0");
        let flag = dir.path().join("synchronized");
        assert!(!synchronized(&rtc, &flag));
        std::fs::write(&flag, b"").unwrap();
        assert!(synchronized(&rtc, &flag));
        std::fs::remove_file(&flag).unwrap();
        std::fs::write(&rtc, b"").unwrap();
        assert!(synchronized(&rtc, &flag));
    }
}
