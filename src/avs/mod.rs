//! The AVS v20160207 wire codec, without any networking: the multipart
//! parser for directive streams, the multipart/form-data writer for events,
//! and the JSON envelopes on both sides. The HTTP/2 connection sits on top.

pub mod encode;
pub mod message;
mod mime;
pub mod multipart;
mod multipart_error;

#[cfg(test)]
mod tests;
