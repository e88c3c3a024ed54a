//! `avs-sim lwa`: a stand-in for Login with Amazon that enforces what LWA
//! enforces (client id, exact redirect URI, `alexa:all` with well-formed
//! `scope_data`, PKCE, single-use expiring codes, client authentication,
//! rotating refresh tokens, LWA's error JSON), with a consent page and a
//! control API under `/_sim/` for tests: `fail` (the next `count` token
//! calls, and a random `ratio` of them after that), `delay`, `advance`,
//! `revoke` (a grant: its refresh token gets `invalid_grant` and AVS
//! refuses its access tokens) and `expire` (every access token issued so
//! far, before its time; AVS refuses them); `GET /_sim/counters`,
//! `/_sim/issued` and `/_sim/grants` (refreshes per grant, reuse).
//! Refresh-token rotation and its reuse detection
//! (`--rotate-refresh-tokens strict`) live in `rotation.rs`. Code-based
//! linking (the code pair, the page where the user enters the code, the
//! device-code grant) lives in `cbl.rs` and `cbl_routes.rs`.

pub mod cbl;
mod cbl_routes;
pub mod rotation;
mod routes;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kit::secret::Secret;
pub use rotation::RotationMode;
pub use state::{Rules, SimState};

/// Command-line flags of `avs-sim lwa`.
#[derive(Debug, clap::Args)]
pub struct LwaArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The registered LWA client id.
    #[arg(long, default_value = "amzn1.application-oa2-client.avssim")]
    pub client_id: String,
    /// File holding the client secret (first line).
    #[arg(long)]
    pub client_secret_file: PathBuf,
    /// An allowed return URL, matched exactly; repeat for several.
    #[arg(long = "redirect-uri", required = true)]
    pub redirect_uris: Vec<String>,
    /// PEM certificate chain of this server.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// PEM private key of this server.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// File with the key that signs access tokens (shared with `avs-sim avs`);
    /// a random key is used without it.
    #[arg(long)]
    pub token_key_file: Option<PathBuf>,
    /// Lifetime of access tokens in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime: u64,
    /// Lifetime of authorization codes in seconds.
    #[arg(long, default_value_t = 300)]
    pub code_lifetime: u64,
    /// Approve every consent request without showing the page.
    #[arg(long)]
    pub auto_approve: bool,
    /// The client id of an "Other devices and platforms" security profile,
    /// allowed code-based linking; without it every code pair is refused.
    #[arg(long)]
    pub cbl_client_id: Option<String>,
    /// Lifetime of a code pair in seconds (LWA's example: 600).
    #[arg(long, default_value_t = 600)]
    pub codepair_lifetime: u64,
    /// Seconds between device-code polls the device is told (LWA's
    /// example: 30).
    #[arg(long, default_value_t = 30)]
    pub codepair_interval: u64,
    /// What a superseded refresh token does when presented again: `rotate`
    /// refuses it (`invalid_grant`); `strict` also revokes its whole grant,
    /// the reuse detection of RFC 9700 §4.14.2 (real LWA is more lenient).
    #[arg(long, value_enum, default_value_t = RotationMode::Rotate)]
    pub rotate_refresh_tokens: RotationMode,
}

/// Everything `run` needs.
pub struct SimConfig {
    /// The rules LWA enforces.
    pub rules: Rules,
    /// TLS server config.
    pub tls: Arc<ServerConfig>,
    /// Skip the consent page.
    pub auto_approve: bool,
    /// Code-based linking.
    pub cbl: cbl::CblRules,
}

impl SimConfig {
    /// Build from flags: read the secret, the key, the TLS files.
    pub fn from_args(a: &LwaArgs) -> Result<Self, String> {
        let secret = std::fs::read_to_string(&a.client_secret_file).map_err(|e| {
            format!(
                "{}: cannot read the client secret file: {e}",
                a.client_secret_file.display()
            )
        })?;
        let secret = secret.lines().next().unwrap_or("").trim().to_string();
        if secret.is_empty() {
            return Err(format!(
                "{}: the client secret file is empty",
                a.client_secret_file.display()
            ));
        }
        for uri in &a.redirect_uris {
            match url::Url::parse(uri) {
                Ok(u) if u.scheme() == "https" => {}
                _ => {
                    return Err(format!(
                        "--redirect-uri {uri}: LWA only allows https:// URLs"
                    ));
                }
            }
        }
        let token_key = crate::token::load_or_generate_key(a.token_key_file.as_deref())?;
        let tls = https::server_config(&a.tls_cert, &a.tls_key, None).map_err(|e| e.to_string())?;
        Ok(Self {
            rules: Rules {
                client_id: a.client_id.clone(),
                client_secret: Secret::new(secret),
                redirect_uris: a.redirect_uris.clone(),
                token_lifetime: Duration::from_secs(a.token_lifetime),
                code_lifetime: Duration::from_secs(a.code_lifetime),
                token_key,
                revocations: a
                    .token_key_file
                    .as_deref()
                    .map(crate::token::revocation_list),
                rotation: a.rotate_refresh_tokens,
            },
            tls,
            auto_approve: a.auto_approve,
            cbl: cbl::CblRules {
                client_id: a.cbl_client_id.clone(),
                lifetime: Duration::from_secs(a.codepair_lifetime),
                interval: a.codepair_interval,
            },
        })
    }
}

/// Serve the stand-in on `listener` until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, config: SimConfig, shutdown: CancellationToken) {
    let shared = Arc::new(routes::Shared {
        state: Mutex::new(SimState::new(config.rules)),
        auto_approve: config.auto_approve,
        cbl: Mutex::new(cbl::Cbl::new(config.cbl)),
        in_progress: Default::default(),
    });
    https::serve(listener, config.tls, shutdown, move |req, _peer| {
        let shared = shared.clone();
        async move { routes::handle(req, shared).await }
    })
    .await;
}
