//! The small kit every avsd program shares: strict config loading, secrets
//! that never print, the retry back-off, atomic file writes, the actor
//! plumbing and published state, the clock, logging and sd_notify.
//!
//! It sits at the bottom of the workspace and depends on no other crate of
//! it, so nothing here can reach up into a program.

#[cfg(feature = "runtime")]
pub mod actor;
#[cfg(feature = "runtime")]
pub mod backoff;
pub mod clock;
pub mod fsutil;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "notify")]
pub mod notify;
#[cfg(feature = "runtime")]
pub mod published;
#[cfg(feature = "config")]
pub mod secret;
#[cfg(feature = "runtime")]
pub mod signals;
#[cfg(feature = "config")]
pub mod strict;

#[cfg(feature = "config")]
pub use secret::Secret;
