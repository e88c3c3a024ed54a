//! Rate limits for the routes anyone can call: registrations per client
//! address and per product+serial, and wrong registration codes per client
//! address (RFC 8628 §5.1: the user code is short, so guessing must be
//! slowed). Token buckets in memory, one per key, with a bounded number of
//! keys so a flood of addresses or serials cannot grow the map forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Keys a limiter tracks at most; a full map first drops keys whose bucket
/// has refilled (they carry no information), then refuses new keys.
const MAX_KEYS: usize = 16 * 1024;

/// A token bucket per key: `per_minute` tokens a minute, bursts up to
/// `per_minute`.
pub struct RateLimiter<K> {
    per_minute: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `per_minute` a minute per key.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn rate(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let cap = f64::from(self.per_minute);
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        Bucket {
            tokens: (b.tokens + secs * self.rate()).min(cap),
            at: now,
        }
    }

    fn wait_for_one(&self, b: Bucket) -> Duration {
        let missing = (1.0 - b.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate().max(f64::MIN_POSITIVE))
            .max(Duration::from_secs(1))
    }

    /// Take one token for `key`: `Ok` if there was one, else how long
    /// until there will be.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.spend(key, true)
    }

    /// Whether `key` has a token left, without taking it.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.spend(key, false)
    }

    fn spend(&self, key: &K, take: bool) -> Result<(), Duration> {
        let now = Instant::now();
        let full = Bucket {
            tokens: f64::from(self.per_minute),
            at: now,
        };
        // Plain numbers: a panic elsewhere cannot leave them half-changed.
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_KEYS {
            let cap = f64::from(self.per_minute);
            map.retain(|_, b| self.refilled(*b, now).tokens < cap);
            if map.len() >= MAX_KEYS {
                // Every tracked key is busy: this is a flood from many
                // keys at once. Refuse rather than forget who is limited.
                return Err(Duration::from_secs(60));
            }
        }
        let b = self.refilled(map.get(key).copied().unwrap_or(full), now);
        if b.tokens < 1.0 {
            map.insert(key.clone(), b);
            return Err(self.wait_for_one(b));
        }
        if take {
            map.insert(
                key.clone(),
                Bucket {
                    tokens: b.tokens - 1.0,
                    at: now,
                },
            );
        }
        Ok(())
    }
}

/// The companion's limiters.
pub struct Limiters {
    /// `POST /provision/regCode` per client address.
    pub registrations_per_address: RateLimiter<IpAddr>,
    /// `POST /provision/regCode` per product id and serial.
    pub registrations_per_device: RateLimiter<(String, String)>,
    /// Wrong or malformed registration codes per client address.
    pub wrong_codes_per_address: RateLimiter<IpAddr>,
}

impl Limiters {
    /// From the `[limits]` config section.
    pub fn new(c: &super::config::LimitsSection) -> Self {
        Self {
            registrations_per_address: RateLimiter::new(c.registrations_per_address_per_minute),
            registrations_per_device: RateLimiter::new(c.registrations_per_device_per_minute),
            wrong_codes_per_address: RateLimiter::new(c.wrong_codes_per_address_per_minute),
        }
    }
}

/// The address a client is limited under: IPv6 by its /64 (one host
/// commonly holds a whole /64), IPv4 as is.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Seconds for a `Retry-After` header: whole seconds, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = RateLimiter::new(6);
        for _ in 0..6 {
            assert!(l.take(&1).is_ok());
        }
        let wait = l.take(&1).unwrap_err();
        assert_eq!(retry_after_secs(wait), 10, "6 a minute: one every 10 s");
        assert!(l.take(&2).is_ok(), "other keys are not affected");
        assert!(l.check(&1).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(l.check(&1).is_ok(), "check takes nothing");
        assert!(l.take(&1).is_ok());
        assert!(l.take(&1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded_under_many_keys() {
        let l = RateLimiter::new(1);
        for k in 0..MAX_KEYS {
            assert!(l.take(&k).is_ok());
        }
        assert!(
            l.take(&usize::MAX).is_err(),
            "a full map of busy keys refuses"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(l.take(&usize::MAX).is_ok(), "refilled keys make room");
        assert!(l.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
