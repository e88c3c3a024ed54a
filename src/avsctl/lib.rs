//! avsctl: the command-line client of avsd over the system D-Bus. The
//! library holds what tests and other programs reuse: the typed D-Bus
//! proxies of avsd's interfaces, the status report, the `show` format and
//! the exit codes.

pub mod cli;
pub mod exit;
pub mod proxy;
pub mod report;
pub mod show;
