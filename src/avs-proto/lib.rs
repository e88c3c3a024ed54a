//! The Alexa Voice Service wire codec, without any networking: the
//! multipart parser for directive streams, the multipart/form-data writer
//! for events, and the JSON envelopes of directives and events. The daemon
//! and the AVS stand-in both use it, and the fuzz targets feed it.

pub mod encode;
pub mod message;
mod mime;
pub mod multipart;
mod multipart_error;

#[cfg(test)]
mod tests;
