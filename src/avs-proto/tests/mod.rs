//! Unit tests of the codec rules, one file per module.

mod encode;
mod message;
mod multipart;
