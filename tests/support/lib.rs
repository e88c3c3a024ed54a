//! What the cross-program tests share, one module per kind of rig: the
//! common rig (programs, private bus, sd_notify, avsd processes), ALSA
//! through file-backed PCMs, the AVS stand-in, the companion and its
//! clients, a whole system (bus, stand-ins, companion, avsd), spoken
//! dialogs, fault injection, and the real-time FIFO ends those ALSA PCMs
//! are played through (also the `fifo-audio` program of the scripts).

pub mod audio;
mod common;
pub mod companion;
pub mod dialog;
pub mod faults;
pub mod fifo;
pub mod fleet;
pub mod haproxy;
pub mod media;
pub mod polkit;
pub mod postgres;
pub mod sim;
pub mod system;
pub mod tls;

pub use common::*;
