//! `avs-companion`: the Login with Amazon companion web service. A device
//! registers and gets a short code; the user opens the code's page, logs in
//! with Amazon, and the service keeps the refresh token and hands the device
//! fresh access tokens.

#![warn(missing_docs)]

pub mod browser;
pub mod cli;
pub mod config;
pub mod device;
pub mod flow;
pub mod http;
pub mod lwa_client;
pub mod pages;
pub mod server;
pub mod store;

pub use config::CompanionConfig;
pub use server::{run, run_with_clock};
