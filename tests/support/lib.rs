//! What the cross-program tests share, one module per kind of rig: the
//! common rig (programs, private bus, sd_notify, avsd processes), ALSA
//! through file-backed PCMs, the AVS stand-in, the companion and its
//! clients, a whole system (bus, stand-ins, companion, avsd), spoken
//! dialogs, and fault injection.

pub mod audio;
mod common;
pub mod companion;
pub mod dialog;
pub mod faults;
pub mod sim;
pub mod system;
pub mod tls;

pub use common::*;
