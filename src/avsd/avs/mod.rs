//! The Alexa Voice Service side of the daemon: `link` is the HTTP/2
//! connection, `connection` keeps it up, `inbound` reads the directive
//! stream with the codec of `avs-proto`, and `router` hands each directive
//! to its interface.

pub mod connection;
pub mod discovery;
pub mod inbound;
pub mod link;
pub mod router;
