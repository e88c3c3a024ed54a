//! The one retry policy of the project: a table of delays, each drawn with
//! full jitter from `[0, table[n]]`, kept across attempts and reset only when
//! the caller says the link has stayed good.
//!
//! Jitter comes from the OS random source, never from the clock, so a fleet
//! that lost its network at the same moment does not retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with full jitter over a fixed table.
#[derive(Debug, Clone)]
pub struct Backoff {
    table: Vec<Duration>,
    attempt: usize,
}

impl Backoff {
    /// A policy over `table`, whose last entry repeats forever.
    ///
    /// # Panics
    /// If `table` is empty: that is a programming error, not input.
    pub fn new(table: &[Duration]) -> Self {
        assert!(
            !table.is_empty(),
            "a back-off table needs at least one step"
        );
        Self {
            table: table.to_vec(),
            attempt: 0,
        }
    }

    /// Reconnecting to AVS: 250 ms doubling to 64 s (the AVS Device SDK's
    /// table since 1.19).
    pub fn avs_connect() -> Self {
        Self::new(&ms(&[250, 1000, 2000, 4000, 8000, 16000, 32000, 64000]))
    }

    /// Talking to LWA or the companion: about a second up to two minutes.
    pub fn token_service() -> Self {
        Self::new(&ms(&[1000, 2000, 4000, 10_000, 30_000, 60_000, 120_000]))
    }

    /// How many delays have been handed out since the last reset.
    pub fn attempt(&self) -> usize {
        self.attempt
    }

    /// The ceiling of the next delay, without consuming it.
    pub fn next_ceiling(&self) -> Duration {
        self.table[self.attempt.min(self.table.len() - 1)]
    }

    /// The next delay: uniform in `[0, ceiling]`, then move up the table.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next_ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Start again from the first step (after a connection stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn ms(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|v| Duration::from_millis(*v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_growing_ceiling_and_cap() {
        let mut b = Backoff::avs_connect();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let c = b.next_ceiling();
            let d = b.next_delay();
            assert!(d <= c, "{d:?} above ceiling {c:?}");
            ceilings.push(c);
        }
        assert!(ceilings.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*ceilings.last().unwrap(), Duration::from_secs(64));
        assert_eq!(b.attempt(), 12);
        b.reset();
        assert_eq!(b.next_ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn jitter_spreads_delays() {
        // Full jitter: 200 draws at a 64 s ceiling should not all be equal
        // and should cover both halves of the range.
        let mut b = Backoff::new(&[Duration::from_secs(64)]);
        let draws: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        let half = Duration::from_secs(32);
        assert!(draws.iter().any(|d| *d < half));
        assert!(draws.iter().any(|d| *d >= half));
    }
}
