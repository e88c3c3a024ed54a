//! `avs-companion`: the Login with Amazon companion web service. A device
//! registers and gets a short code; the user opens the code's page, logs in
//! with Amazon, and the service keeps the refresh token and hands the device
//! fresh access tokens.
//!
//! Trying it locally against the LWA stand-in (from the repository root,
//! after `cargo build`; `target/debug` on `PATH`):
//!
//! ```text
//! mkdir demo && cd demo
//! avs-companion make-certs --out certs --host localhost --host 127.0.0.1
//! head -c 24 /dev/urandom | base64 > client-secret && chmod 600 client-secret
//! avs-sim lwa --listen 127.0.0.1:8444 --client-secret-file client-secret \
//!     --redirect-uri https://localhost:8443/authresponse \
//!     --tls-cert certs/server.crt --tls-key certs/server.key &
//! # companion.toml: [server] listen = "127.0.0.1:8443", cert_file, key_file;
//! # [lwa] client_id = "amzn1.application-oa2-client.avssim",
//! #   client_secret_file = "client-secret",
//! #   redirect_uri = "https://localhost:8443/authresponse",
//! #   authorize_url = "https://127.0.0.1:8444/ap/oa",
//! #   token_url = "https://127.0.0.1:8444/auth/o2/token", ca_file = "certs/ca.crt";
//! # [products] my_avs_device = []
//! STATE_DIRECTORY=$PWD/state avs-companion --config companion.toml &
//! curl --cacert certs/ca.crt -d '{"productId":"my_avs_device","dsn":"0001"}' \
//!     https://localhost:8443/provision/regCode
//! # open loginUrl in a browser, press "Login with Amazon", then Allow
//! curl --cacert certs/ca.crt -d '{"sessionId":"…"}' https://localhost:8443/provision/accessToken
//! ```
//!
//! For Amazon, drop `authorize_url`, `token_url` and `ca_file` (the defaults
//! are Amazon's) and use the security profile's client id and secret.

pub mod browser;
pub mod cli;
pub mod config;
pub mod device;
pub mod flow;
pub mod limits;
pub mod lwa_client;
pub mod owner;
pub mod pages;
pub mod recent;
pub mod refresh;
pub mod register;
pub mod revoke;
pub mod server;
pub mod sessions;
pub mod store;
pub mod token_cache;

pub use config::CompanionConfig;
pub use server::{run, run_with_clock};
