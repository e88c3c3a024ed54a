//! avsd: an Alexa Voice Service client daemon for Raspberry Pi, and the
//! Login with Amazon companion service that authorizes it.
//!
//! Modules depend downwards only: `config`, `secret`, `backoff`, `fsutil` at
//! the bottom; protocol and service modules in the middle; `daemon` and
//! `dbus` on top.

pub mod backoff;
pub mod companion;
pub mod config;
pub mod fsutil;
pub mod secret;
pub mod sim;
pub mod tls;
