//! avsd: the Alexa Voice Service client daemon, as a library so that tests
//! can run its parts in-process.
//!
//! Below it in the workspace: `kit` (shared helpers), `avs-proto` (the AVS
//! codec) and `avsd-config` (its config file). Inside, modules depend
//! downwards: `audio` and `avs` (the connection) at the bottom; `auth` and
//! `dialog` (the actors) in the middle, with `agents` (one per AVS
//! interface) above `dialog`; `dbus` and `daemon` on top.

pub mod agents;
pub mod audio;
pub mod auth;
pub mod avs;
pub mod cli;
pub mod daemon;
pub mod dbus;
pub mod device;
pub mod dialog;
pub mod media;
pub mod volume;
pub mod wakeword;
