//! avsd: an Alexa Voice Service client daemon for Raspberry Pi, and the
//! Login with Amazon companion service that authorizes it.
//!
//! Modules depend downwards only: `config`, `secret`, `backoff`, `fsutil`,
//! `actor` at the bottom; `auth` and `dialog` (the actors) in the middle,
//! with `agents` (one per AVS interface) above `dialog`; `dbus` and
//! `daemon` on top.

pub mod actor;
pub mod agents;
pub mod audio;
pub mod auth;
pub mod avs;
pub mod backoff;
pub mod companion;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dbus;
pub mod device;
pub mod dialog;
pub mod fsutil;
pub mod logging;
pub mod notify;
pub mod published;
pub mod secret;
pub mod sim;
pub mod tls;
