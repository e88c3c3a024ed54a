//! `avs-sim avs`: a stand-in for the Alexa Voice Service HTTP/2 API that
//! enforces what AVS enforces (protocol brief §C): HTTP/2 over TLS only, a
//! valid Bearer token from `avs-sim lwa` on every request, the downchannel
//! before any event, `System.SynchronizeState` first, well-formed
//! `multipart/form-data` events with their `metadata` JSON, and at most 10
//! concurrent streams. It pushes directives on the downchannel, answers
//! `Recognize` with StopCapture and a spoken `Speak`, and has a separate
//! plain-HTTP control API for tests (faults, pushes, statistics).
//!
//! Layout: `server` (TLS, HTTP/2 connections, routing), `rules` (auth,
//! exception bodies, metadata checks), `events` (reading event bodies),
//! `dialog` (Recognize answers), `related` (the multipart/related writer),
//! `state` (knobs and statistics), `control` (the control API).

mod control;
mod dialog;
mod events;
mod linger;
mod related;
mod rules;
mod server;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use state::{DialogSettings, Stats};

/// The answer spoken when no `--answer-mp3` is given: a 3 s espeak-ng
/// sentence encoded by lame (mono, 32 kbit/s), 13 KB.
pub const BUILTIN_ANSWER_MP3: &[u8] = include_bytes!("../../../tests/fixtures/answer.mp3");

/// The downchannel path.
pub const DIRECTIVES_PATH: &str = "/v20160207/directives";
/// The events path.
pub const EVENTS_PATH: &str = "/v20160207/events";
/// The ping path.
pub const PING_PATH: &str = "/ping";
/// What the stand-in advertises as SETTINGS_MAX_CONCURRENT_STREAMS, as AVS
/// allows (protocol brief §C.3).
pub const MAX_CONCURRENT_STREAMS: u32 = 10;

/// Command-line flags of `avs-sim avs`.
#[derive(Debug, clap::Args)]
pub struct AvsArgs {
    /// Address to listen on (HTTPS, HTTP/2 only); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP control API; loopback only, as it has no
    /// authentication. Port 0 picks a free port. Without it there is none.
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// PEM certificate chain of this server.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// PEM private key of this server.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// The key file `avs-sim lwa` signs access tokens with.
    #[arg(long)]
    pub token_key_file: PathBuf,
    /// MP3 file spoken in answer to a Recognize (a built-in sentence
    /// without it).
    #[arg(long)]
    pub answer_mp3: Option<PathBuf>,
    /// NEAR_FIELD/FAR_FIELD: send StopCapture this long after the first
    /// audio byte (or earlier, when the audio ends).
    #[arg(long, default_value_t = 3000)]
    pub stop_capture_ms: u64,
    /// With a value above 0: send StopCapture once this much silence
    /// follows speech (a crude end-of-speech detector).
    #[arg(long, default_value_t = 0)]
    pub end_of_speech_ms: u64,
    /// Audio whose loudest 100 ms window has an RMS below this (on the
    /// 16-bit scale) counts as silence and gets no spoken answer.
    #[arg(long, default_value_t = 200.0)]
    pub silence_rms: f64,
    /// Close (GOAWAY) a connection with no new stream for this many
    /// seconds, as AVS does after 5 minutes; 0 never does.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
}

/// Everything [`run`] needs.
pub struct AvsConfig {
    /// TLS server config; [`run`] restricts ALPN to `h2`.
    pub tls: Arc<ServerConfig>,
    /// The key access tokens are verified with.
    pub token_key: Vec<u8>,
    /// The MP3 spoken in answers.
    pub answer_mp3: Bytes,
    /// Dialog behaviour at start (the control API changes it).
    pub dialog: DialogSettings,
    /// See [`AvsArgs::idle_timeout_secs`]; `None` never closes.
    pub idle_timeout: Option<Duration>,
    /// The control API's listener, if any.
    pub control: Option<TcpListener>,
}

impl AvsConfig {
    /// Build from flags: the TLS files, the token key, the answer MP3. The
    /// control listener is bound by the caller, who prints its address.
    pub fn from_args(a: &AvsArgs) -> Result<Self, String> {
        let token_key = crate::sim::token::load_or_generate_key(Some(&a.token_key_file))?;
        let tls =
            crate::tls::server_config(&a.tls_cert, &a.tls_key, None).map_err(|e| e.to_string())?;
        let answer_mp3 = match &a.answer_mp3 {
            Some(p) => {
                let data = std::fs::read(p)
                    .map_err(|e| format!("{}: cannot read the answer MP3: {e}", p.display()))?;
                if data.is_empty() {
                    return Err(format!("{}: the answer MP3 is empty", p.display()));
                }
                Bytes::from(data)
            }
            None => Bytes::from_static(BUILTIN_ANSWER_MP3),
        };
        Ok(Self {
            tls,
            token_key,
            answer_mp3,
            dialog: DialogSettings {
                stop_capture: Duration::from_millis(a.stop_capture_ms),
                end_of_speech: (a.end_of_speech_ms > 0)
                    .then(|| Duration::from_millis(a.end_of_speech_ms)),
                silence_rms: a.silence_rms,
                ..DialogSettings::default()
            },
            idle_timeout: (a.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(a.idle_timeout_secs)),
            control: None,
        })
    }
}

/// Serve the stand-in on `listener` (and the control API on
/// `config.control`) until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, config: AvsConfig, shutdown: CancellationToken) {
    // AVS speaks HTTP/2 only; with `h2` as the only protocol, rustls
    // refuses a client that offers only `http/1.1` during the handshake.
    let mut tls = Arc::unwrap_or_clone(config.tls);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let shared = Arc::new(state::Shared::new(
        config.token_key,
        config.answer_mp3,
        config.dialog,
        config.idle_timeout,
    ));
    let control = config
        .control
        .map(|l| tokio::spawn(control::serve(l, shared.clone(), shutdown.clone())));
    server::serve(listener, Arc::new(tls), shared, shutdown).await;
    if let Some(task) = control {
        let _ = task.await;
    }
}
