//! The companion's state machine, shared by the browser side
//! ([`super::browser`]) and the device side ([`super::device`]): the clock,
//! random values, and LWA calls with back-off.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::{Rng, RngCore};

use super::config::CompanionConfig;
use super::lwa_client::{LwaClient, LwaError};
use super::store::StoreHandle;
use kit::backoff::Backoff;

/// Unix seconds; a trait so tests can move time for expiry checks.
pub trait Clock: Send + Sync + 'static {
    /// The current time, Unix seconds.
    fn now(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        kit::clock::unix_now()
    }
}

/// A clock that starts at the wall clock and moves only when told.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Start at the current wall-clock time.
    pub fn new() -> Self {
        Self(AtomicU64::new(kit::clock::unix_now()))
    }

    /// Move forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long one request may spend retrying LWA before it answers.
pub const RETRY_BUDGET: Duration = Duration::from_secs(20);

/// Registration-code alphabet: no 0/O, 1/I/L, so codes survive being read
/// aloud or typed on a phone.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Length of a registration code (about 40 bits).
pub const CODE_LEN: usize = 8;

/// Everything the handlers share.
pub struct Flow {
    /// The configuration.
    pub config: Arc<CompanionConfig>,
    /// Storage.
    pub store: StoreHandle,
    /// LWA's token endpoint.
    pub lwa: LwaClient,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Rate limits of the routes anyone can call.
    pub limits: super::limits::Limiters,
    /// Refreshes forced by devices reporting a refused token, per session.
    pub refused: super::device::RefusalLimiter,
    /// Sign-ins that linked a device lately, for a reloaded success page.
    pub recent_links: super::recent::RecentLinks,
    /// The last token each session was given, for when the database is
    /// unreachable.
    pub token_cache: super::token_cache::TokenCache,
}

impl Flow {
    /// Assemble the flow.
    pub fn new(
        config: Arc<CompanionConfig>,
        store: StoreHandle,
        lwa: LwaClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let refused = super::device::RefusalLimiter::new(config.lwa.refused_refreshes_per_minute);
        Self {
            limits: super::limits::Limiters::new(&config.limits),
            config,
            store,
            lwa,
            clock,
            refused,
            recent_links: Default::default(),
            token_cache: Default::default(),
        }
    }

    /// The current time.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// A fresh registration code.
pub fn new_reg_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// A code as typed by a person (`abcd-efgh`, spaces) in canonical form, or
/// `None` if it cannot be one of ours.
pub fn normalize_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b));
    ok.then_some(code)
}

pub use https::ct_eq;

/// The PKCE S256 challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// Call `op` until it succeeds, fails for good, or the next back-off delay
/// would take the total past `budget`. Only transient failures are retried.
pub async fn with_retry<T, F, Fut>(
    backoff: &mut Backoff,
    budget: Duration,
    what: &str,
    mut op: F,
) -> Result<T, LwaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LwaError>>,
{
    let start = tokio::time::Instant::now();
    loop {
        match op().await {
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                if start.elapsed() + delay > budget {
                    tracing::warn!(what, error = %e, "LWA still unavailable; giving up for now");
                    return Err(e);
                }
                tracing::warn!(
                    what,
                    error = %e,
                    attempt = backoff.attempt(),
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "LWA unavailable; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn codes_are_typeable_and_normalized() {
        for _ in 0..100 {
            let c = new_reg_code();
            assert_eq!(normalize_code(&c).as_deref(), Some(c.as_str()));
        }
        assert_eq!(normalize_code("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code("ABCD EFG"), None);
        assert_eq!(normalize_code("ABCDEFG0"), None, "0 is not in the alphabet");
        assert_eq!(normalize_code("../etc/x"), None);
    }

    #[test]
    fn pkce_matches_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_with_growing_delays_then_succeeds() {
        let calls = Cell::new(0);
        let start = tokio::time::Instant::now();
        let mut b = Backoff::new(&[Duration::from_secs(1), Duration::from_secs(2)]);
        let r = with_retry(&mut b, Duration::from_secs(60), "test", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n <= 3 {
                    Err(LwaError::Unavailable("503".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(b.attempt(), 3);
        // Full jitter under ceilings 1 + 2 + 2 seconds.
        assert!(start.elapsed() <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_budget_and_never_retries_a_refusal() {
        let mut b = Backoff::new(&[Duration::from_secs(10)]);
        let calls = Cell::new(0);
        let start = tokio::time::Instant::now();
        let r: Result<(), _> = with_retry(&mut b, Duration::from_secs(30), "test", || {
            calls.set(calls.get() + 1);
            async { Err(LwaError::Unavailable("down".into())) }
        })
        .await;
        assert!(r.is_err());
        assert!(start.elapsed() <= Duration::from_secs(30));
        assert!(calls.get() >= 3, "retried {} times", calls.get());

        let calls = Cell::new(0);
        let r: Result<(), _> = with_retry(&mut b, Duration::from_secs(30), "test", || {
            calls.set(calls.get() + 1);
            async {
                Err(LwaError::Rejected {
                    status: 400,
                    error: "invalid_grant".into(),
                })
            }
        })
        .await;
        assert!(r.unwrap_err().is_invalid_grant());
        assert_eq!(calls.get(), 1);
    }
}
