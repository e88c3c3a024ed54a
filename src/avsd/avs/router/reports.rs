//! The limit on System.ExceptionEncountered reports. AVS may send any number
//! of directives avsd cannot handle, and each one earns a report; a server
//! (or whoever sits in its place) sending thousands a second must not turn
//! into thousands of events waiting for the connection, nor into thousands
//! of log lines. So reports are admitted from a token bucket (a burst, then
//! a steady trickle) and only while few are in flight; the rest are counted
//! and summed up in the log once per interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Reports waiting for the connection or being sent, at most. Events go out
/// one at a time, so more in flight only means more memory.
pub const MAX_REPORTS_IN_FLIGHT: usize = 16;

/// Reports admitted at once after a quiet spell: a real answer with a few
/// directives avsd lacks fits in it.
pub const REPORT_BURST: u32 = 16;

/// After a burst, one report per this much time: AVS throttles a device
/// that sends many events, and a flood needs no more than a sample.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How often the log sums up the directives left unreported.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The bucket, the in-flight cap and the count of what was left out.
#[derive(Debug)]
pub(super) struct Reports {
    in_flight: Arc<Semaphore>,
    tokens: f64,
    refilled: Instant,
    /// Left unreported since the last summary.
    dropped: u64,
    /// When the first of those was left out.
    dropping_since: Option<Instant>,
}

impl Reports {
    pub(super) fn new() -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(MAX_REPORTS_IN_FLIGHT)),
            tokens: f64::from(REPORT_BURST),
            refilled: Instant::now(),
            dropped: 0,
            dropping_since: None,
        }
    }

    /// A permit to send one report, or `None` (counted) while the limit
    /// holds. The permit travels with the report until it is sent.
    pub(super) fn admit(&mut self) -> Option<OwnedSemaphorePermit> {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() / REPORT_EVERY.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(REPORT_BURST));
        self.refilled = now;
        if self.tokens >= 1.0
            && let Ok(permit) = self.in_flight.clone().try_acquire_owned()
        {
            self.tokens -= 1.0;
            return Some(permit);
        }
        self.dropped += 1;
        self.dropping_since.get_or_insert(now);
        None
    }

    /// When the next summary is due, if anything was left out.
    pub(super) fn summary_due(&self) -> Option<Instant> {
        self.dropping_since.map(|since| since + SUMMARY_EVERY)
    }

    /// Log how many were left out since the last summary, and start over.
    pub(super) fn summarize(&mut self) {
        let Some(since) = self.dropping_since.take() else {
            return;
        };
        let dropped = std::mem::take(&mut self.dropped);
        tracing::warn!(
            "not reporting {dropped} more directives avsd cannot handle (received in the last \
             {:.0} s): AVS is sending more than avsd reports (a burst of {REPORT_BURST}, then \
             one per {} s, at most {MAX_REPORTS_IN_FLIGHT} at once)",
            since.elapsed().as_secs_f64(),
            REPORT_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_a_trickle_and_the_rest_counted() {
        let mut r = Reports::new();
        let mut held = Vec::new();
        for _ in 0..REPORT_BURST {
            held.push(r.admit().expect("within the burst"));
        }
        assert!(r.admit().is_none(), "the burst is spent");
        assert!(r.summary_due().is_some());
        drop(held);
        tokio::time::advance(REPORT_EVERY).await;
        assert!(r.admit().is_some(), "one more after a refill period");
        assert!(r.admit().is_none());
        assert_eq!(r.dropped, 2);
        r.summarize();
        assert_eq!(r.dropped, 0);
        assert!(r.summary_due().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn reports_in_flight_are_capped_even_with_tokens() {
        let mut r = Reports::new();
        let held: Vec<_> = (0..MAX_REPORTS_IN_FLIGHT)
            .map_while(|_| r.admit())
            .collect();
        assert_eq!(held.len(), MAX_REPORTS_IN_FLIGHT.min(REPORT_BURST as usize));
        // Plenty of tokens after a long pause, but every slot is taken.
        tokio::time::advance(REPORT_EVERY * 100).await;
        assert!(r.admit().is_none(), "all slots taken");
        drop(held);
        assert!(r.admit().is_some(), "a slot is free again");
    }
}
