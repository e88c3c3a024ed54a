//! Refresh-token rotation of the web client's grants: which refresh tokens
//! were superseded, how often each grant was refreshed, and the reuse
//! detection of RFC 9700 §4.14.2 under `--rotate-refresh-tokens strict`.
//!
//! Every refresh already hands out a new refresh token and retires the one
//! presented (stricter than LWA, whose refresh-token page says they stay
//! valid until the user removes the app). What the mode changes is what a
//! retired token does when it comes back: by default it is just unknown
//! (`invalid_grant`); under `strict` it is taken as a sign that the token
//! leaked (or that two clients raced with one token) and the whole grant is
//! revoked, as RFC 9700 describes. A companion that is right under the
//! strict reading never loses a session to a race.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::state::{LwaError, SimState};

/// What a superseded refresh token does when presented again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationMode {
    /// Refused with `invalid_grant`; the grant lives on.
    #[default]
    Rotate,
    /// Refused with `invalid_grant`, and the whole grant is revoked (every
    /// refresh token of it; `avs-sim avs` refuses its access tokens).
    Strict,
}

/// Superseded tokens remembered (oldest forgotten first), so a long soak
/// does not grow the stand-in without bound.
const REMEMBERED_SUPERSEDED: usize = 1 << 16;

/// Refreshes of one grant.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GrantStats {
    /// Successful refreshes.
    pub refreshes: u64,
    /// The shortest time between two successful refreshes, in
    /// milliseconds (absent before the second): a refresh moments after
    /// another means a session was refreshed twice for one due time.
    pub min_gap_ms: Option<u64>,
    /// Whether reuse detection revoked it.
    pub revoked_for_reuse: bool,
    #[serde(skip)]
    last: Option<Instant>,
}

/// Rotation's memory.
#[derive(Debug, Default)]
pub struct Rotation {
    /// The mode the stand-in was started in.
    pub mode: RotationMode,
    /// Superseded refresh token to its grant.
    superseded: HashMap<String, String>,
    order: VecDeque<String>,
    grants: HashMap<String, GrantStats>,
    /// Superseded refresh tokens presented again.
    pub reused: u64,
    /// Grants revoked because one of their superseded tokens came back.
    pub revoked_for_reuse: u64,
}

impl Rotation {
    /// Empty, in `mode`.
    pub fn new(mode: RotationMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// `old` was exchanged for a new refresh token of `grant` just now.
    pub fn rotated(&mut self, old: &str, grant: &str, now: Instant) {
        if self.order.len() == REMEMBERED_SUPERSEDED
            && let Some(gone) = self.order.pop_front()
        {
            self.superseded.remove(&gone);
        }
        self.superseded.insert(old.to_string(), grant.to_string());
        self.order.push_back(old.to_string());
        let g = self.grants.entry(grant.to_string()).or_default();
        g.refreshes += 1;
        if let Some(last) = g.last {
            let gap =
                u64::try_from(now.saturating_duration_since(last).as_millis()).unwrap_or(u64::MAX);
            g.min_gap_ms = Some(g.min_gap_ms.map_or(gap, |m| m.min(gap)));
        }
        g.last = Some(now);
    }

    /// `token` was presented but is not live: if it is a superseded one,
    /// count the reuse and return its grant when the grant must now be
    /// revoked (strict mode, first time).
    pub fn reused(&mut self, token: &str) -> Option<Reuse> {
        let grant = self.superseded.get(token)?.clone();
        self.reused += 1;
        let g = self.grants.entry(grant.clone()).or_default();
        let revoke = self.mode == RotationMode::Strict && !g.revoked_for_reuse;
        if revoke {
            g.revoked_for_reuse = true;
            self.revoked_for_reuse += 1;
        }
        Some(Reuse { grant, revoke })
    }

    /// The per-grant figures, for `/_sim/grants`.
    pub fn grants(&self) -> &HashMap<String, GrantStats> {
        &self.grants
    }
}

/// A superseded refresh token came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reuse {
    /// The grant it belonged to.
    pub grant: String,
    /// Whether the grant must be revoked now.
    pub revoke: bool,
}

impl SimState {
    /// A refresh token that is not live: if it is a superseded one, count
    /// the reuse and (strict mode) revoke its grant; the refusal to send.
    pub(super) fn check_reuse(&mut self, token: &str) -> Result<(), LwaError> {
        let Some(reuse) = self.rotation.reused(token) else {
            return Ok(());
        };
        self.counters.reused_refresh_tokens += 1;
        if !reuse.revoke {
            return Err(LwaError::new(
                "invalid_grant",
                "refresh token was already used and has been rotated",
            ));
        }
        self.counters.reuse_revocations += 1;
        tracing::warn!(
            "a superseded refresh token was presented again: its grant is revoked \
             (RFC 9700 reuse detection, --rotate-refresh-tokens strict)"
        );
        if let Err(e) = self.revoke_grant(&reuse.grant) {
            tracing::error!(error = %e, "cannot publish the revocation");
        }
        Err(LwaError::new(
            "invalid_grant",
            "refresh token was already used and has been rotated: the grant is revoked",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn strict_revokes_a_grant_once_and_counts_every_reuse() {
        let mut r = Rotation::new(RotationMode::Strict);
        let t0 = Instant::now();
        r.rotated("a", "g", t0);
        r.rotated("b", "g", t0 + Duration::from_millis(2500));
        assert_eq!(r.grants()["g"].refreshes, 2);
        assert_eq!(r.grants()["g"].min_gap_ms, Some(2500));
        assert_eq!(r.reused("never-issued"), None);
        assert_eq!(
            r.reused("a"),
            Some(Reuse {
                grant: "g".into(),
                revoke: true
            })
        );
        assert_eq!(r.reused("b").map(|x| x.revoke), Some(false));
        assert_eq!((r.reused, r.revoked_for_reuse), (2, 1));
        assert!(r.grants()["g"].revoked_for_reuse);
    }

    #[test]
    fn rotate_mode_counts_reuse_without_revoking() {
        let mut r = Rotation::new(RotationMode::Rotate);
        r.rotated("a", "g", Instant::now());
        assert_eq!(r.reused("a").map(|x| x.revoke), Some(false));
        assert_eq!((r.reused, r.revoked_for_reuse), (1, 0));
    }

    #[test]
    fn memory_of_superseded_tokens_is_bounded() {
        let mut r = Rotation::new(RotationMode::Strict);
        let now = Instant::now();
        for i in 0..=REMEMBERED_SUPERSEDED {
            r.rotated(&i.to_string(), "g", now);
        }
        assert_eq!(r.superseded.len(), REMEMBERED_SUPERSEDED);
        assert_eq!(r.reused("0"), None, "the oldest was forgotten");
        assert!(r.reused("1").is_some());
    }
}
