//! The Alexa Voice Service side: the HTTP/2 link to AVS.

pub mod link;
