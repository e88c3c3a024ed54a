//! Local stand-ins for Amazon's services, for tests, benchmarks and the
//! demo. Not a production component.

pub mod avs;
pub mod lwa;
pub mod media;
pub mod token;
