//! The Alexa Voice Service side. The wire codec works without any
//! networking: the multipart parser for directive streams, the
//! multipart/form-data writer for events, and the JSON envelopes on both
//! sides. `link` is the HTTP/2 connection they travel on.

pub mod connection;
pub mod discovery;
pub mod encode;
pub mod inbound;
pub mod link;
pub mod message;
mod mime;
pub mod multipart;
mod multipart_error;
pub mod router;

#[cfg(test)]
mod tests;
