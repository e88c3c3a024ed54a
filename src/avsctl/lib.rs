//! avsctl: the command-line client of avsd over the system D-Bus. The
//! library holds what tests and other programs reuse: the typed D-Bus
//! proxies of avsd's interfaces and the status report.

pub mod proxy;
pub mod report;
