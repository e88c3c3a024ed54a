//! `avs-sim avs`: a stand-in for the Alexa Voice Service HTTP/2 API that
//! enforces what AVS enforces (protocol brief §C): HTTP/2 over TLS only, a
//! valid Bearer token from `avs-sim lwa` on every request, the downchannel
//! before any event, `System.SynchronizeState` first, well-formed
//! `multipart/form-data` events with their `metadata` JSON, and at most 10
//! concurrent streams. It pushes directives on the downchannel, answers
//! `Recognize` with StopCapture and a spoken `Speak`, and has a separate
//! plain-HTTP control API for tests (faults, pushes, statistics).
//!
//! # Rules and answers
//! - Every request: `authorization: Bearer <token>` signed with
//!   `--token-key-file` and not expired, else 403
//!   `UNAUTHORIZED_REQUEST_EXCEPTION`, followed by a GOAWAY (AVS closes the
//!   connection on an authorization failure). Likewise a token that
//!   `avs-sim lwa` revoked (its grant) or expired early, as listed in
//!   `TOKEN_KEY_FILE.revoked`, and a token refused through `/refuse_token`.
//! - `GET /ping` → 204. `GET /v20160207/directives` → 200
//!   `multipart/related; boundary=…; type=application/json`, kept open; a
//!   second one on the same connection → 400. `POST /v20160207/events`:
//!   not `multipart/form-data` → 415 `UNSUPPORTED_MEDIA_TYPE`; no boundary,
//!   no downchannel on this connection, anything but
//!   `Alexa.Discovery.AddOrUpdateReport` before `System.SynchronizeState`,
//!   broken multipart, a first part not named `metadata`, bad JSON or a
//!   missing field, more than one `audio` part → 400
//!   `INVALID_REQUEST_EXCEPTION` with a `description` naming the problem;
//!   otherwise 204. Other methods → 405, other paths → 404.
//! - `Alexa.Discovery.AddOrUpdateReport` (Alexa.Discovery 3.0): header
//!   `payloadVersion` "3" and an `eventCorrelationToken`; `payload.scope`
//!   `{type: "BearerToken", token}` with the request's own access token;
//!   exactly one endpoint (the device's own: connected endpoints are not
//!   simulated) with an `endpointId` (1–256 letters, digits, spaces,
//!   `_-=#;:?@&`), `registration {productId, deviceSerialNumber}`,
//!   `manufacturerName` and `description` (1–128 characters),
//!   `displayCategories` (not empty), and 1–100 `capabilities`, each
//!   `{type: "AlexaInterface", interface, version, configurations?}` of an
//!   interface and version avs-sim implements (System 1.0,
//!   SpeechRecognizer 2.0–2.3, SpeechSynthesizer 1.0–1.3, Speaker 1.0), each interface
//!   once, `Alexa.Discovery` itself never, `configurations` only where the
//!   version has them (SpeechRecognizer 2.3's wakeWords) → else 400 naming
//!   the entry. Accepted → 202 (AVS takes the report for processing; its
//!   Alexa.EventProcessed goes only to devices declaring `Alexa`, which
//!   avs-sim does not implement), remembered for the connection and for
//!   the device (its token's grant) across connections and `/reset`, as
//!   AVS remembers a device's report.
//! - Every other event's `context`: each entry once, of an interface the
//!   device declared (in a report on this connection, else its last one on
//!   any connection; a device that never sent one, like one declared on
//!   the console, may name any interface avs-sim implements), a state name
//!   that interface has, and the documented payload
//!   (`SpeechSynthesizer.SpeechState {token, offsetInMilliseconds >= 0,
//!   playerActivity PLAYING|FINISHED, INTERRUPTED from 1.3}`,
//!   `SpeechRecognizer.RecognizerState {wakeword}`) → else 400.
//! - Speaker 1.0 (a capability of its own, see `speaker`): the
//!   `VolumeState {volume: whole number 0–100, muted: boolean}` context
//!   entry; `VolumeChanged` / `MuteChanged` carry the same payload, and the
//!   next one after a SetVolume, AdjustVolume (from the volume last
//!   reported, clamped) or SetMute the stand-in sent reports what it asked
//!   for → else 400. A directive that broke the documented ranges is owed
//!   no event (the device answers it with ExceptionEncountered).
//! - Recognize answers carry only directives of declared interfaces: no
//!   StopCapture or ExpectSpeech without SpeechRecognizer, no Speak without
//!   SpeechSynthesizer (outcome `no speak: …`). `/push` sends what the test
//!   gives, as it is.
//! - `Recognize` (needs `dialogRequestId`, `context`, a profile, format
//!   `AUDIO_L16_RATE_16000_CHANNELS_1` and an `audio` part): the answer's
//!   headers go out with its first directive. NEAR_FIELD/FAR_FIELD:
//!   StopCapture after `stop_capture_ms` from the first audio byte, after
//!   `end_of_speech_ms` of silence following speech, or when the audio ends;
//!   CLOSE_TALK: no StopCapture, the client ends the audio. Then `Speak`
//!   (`cid:` url, `AUDIO_MPEG`, a token) with the MP3, and `ExpectSpeech`
//!   while the control API asks for it. Silence (loudest 100 ms window below
//!   `silence_rms`) gets no Speak: 204 for CLOSE_TALK, 200 with only the
//!   StopCapture otherwise. An odd byte count or an empty audio part → 400
//!   when no answer has started yet.
//! - Idle connections (no new stream for `--idle-timeout-secs`) and old
//!   ones (`--connection-lifetime-secs`, AVS's hourly GOAWAY) get a
//!   GOAWAY. HTTP/2 PING frames are answered by h2 and not seen here, so
//!   only `GET /ping` and other requests count as activity.
//!
//! # Control API (plain HTTP/1.1 on `--control`, JSON answers)
//! - `GET /stats`: `connections {current, peak, total, active, peak_active,
//!   refused, goaways, cuts}`, `downchannels`, `pings`, `pushes`,
//!   `peak_requests` (most requests in progress on one connection),
//!   `events [{connection, name, status, dialog_request_id?,
//!   inactive_seconds? (of a UserInactivityReport)}]` in arrival
//!   order (a Recognize shows status 0 until answered, and keeps it if the
//!   client reset its stream first), `discoveries [{connection,
//!   endpoint_id, product_id, device_serial_number, capabilities
//!   [{interface, version, configurations?}]}]` (accepted reports),
//!   `rejections
//!   [{connection, path, status, code, description}]`, `recognizes
//!   [{connection, dialog_request_id, profile, initiator, audio_bytes,
//!   first_audio_ms, stream_ms, audio_ms, peak_rms, stop_capture_ms,
//!   upload_end_ms, outcome,
//!   expect_speech}]`, `open [{id, peer, downchannel, synced}]`.
//! - `GET /wait?COND&timeout_ms=N` (default 10 000): answers the stats once
//!   every condition holds, 408 on timeout. Conditions (at least N):
//!   `event=NAME[&count=N]` (accepted events), `count=N` (any accepted),
//!   `connections=N` (total), `downchannels=N`, `pings=N`, `recognizes=N`,
//!   `rejections=N`; exactly N: `current=N`; `arrived=NAME`: an event of
//!   that name came in, answered or not (a Recognize still streaming).
//! - `GET /audio?n=I`: recognize number I's audio as a WAV (last 8 kept).
//! - `POST /goaway[?connection=ID][&end_downchannel=false]`,
//!   `POST /cut[?connection=ID]` (TCP reset), `POST /refuse?secs=S` (new
//!   connections are reset during the handshake until then; `secs=0` ends
//!   it), `POST /status?code=400|403|415|429|500|503[&count=N][&on=events|
//!   downchannel|ping|all]` (the next N requests, default 1 event),
//!   `POST /refuse_token[?count=N][&on=…]` (the next N requests, default 1
//!   event, get 403 for their token, and that token is refused on every
//!   request from then on),
//!   `POST /delay?ms=N[&on=…]` (until `ms=0`), `POST /push[?split=tiny]
//!   [&attach=CID][&file=MP3][&raw=true][&count=N]` with the directive JSON as body (sent as
//!   given, to the newest downchannel; with `attach` the answer MP3, or the
//!   file `file` names, follows as Content-ID CID; with `raw` the body goes out with no part framing,
//!   to break the stream on purpose; 409 without a downchannel), `POST /dialog?stop_capture_ms=&
//!   end_of_speech_ms=&silence_rms=&close_grace_ms=&think_ms=&expect_speech_ms=&
//!   expect_speech_count=` (answers the settings), `POST /sync?empty_200=
//!   true|false` (SynchronizeState answered 200 with an empty multipart
//!   body instead of 204, as AVS sometimes does), `POST /answer` with
//!   `{"directives": [{namespace, name, payload}]}` (the next Recognize
//!   answered with a Speak carries them after it, at most 16 answers
//!   queued, directives of undeclared interfaces left out), `POST /reset`
//!   (statistics, fault knobs and scripted answers). `/stats` lists every
//!   event with its payload.
//!
//! Layout: `server` (TLS, HTTP/2 connections, routing), `downchannel`,
//! `rules` (auth, exception bodies, metadata checks), `capabilities`
//! (Discovery reports and contexts), `events` (reading
//! event bodies), `dialog` and `audio` (Recognize answers), `related` (the
//! multipart/related writer), `linger` (orderly closes), `state` and
//! `stats` (knobs and statistics), `control` (the control API),
//! `interfaces` (scripted answers; one module per interface beyond the
//! dialog, with its own event checks).

mod alerts;
mod audio;
mod audio_player;
mod capabilities;
mod control;
mod dialog;
mod downchannel;
mod events;
mod interfaces;
mod linger;
mod related;
mod rules;
mod server;
mod speaker;
pub mod state;
mod stats;
mod wakeword;

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
    /// Send a GOAWAY to every connection this many seconds after it
    /// opened, as AVS does about hourly; 0 never does.
    #[arg(long, default_value_t = 3600)]
    pub connection_lifetime_secs: u64,
    /// Serve the AudioPlayer media made by `scripts/make-media DIR` from
    /// this folder, over HTTPS on `--media-listen` (see `avs_sim::media`).
    #[arg(long)]
    pub media_dir: Option<PathBuf>,
    /// Address of the media server (with `--media-dir`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub media_listen: SocketAddr,
}

/// Everything [`run`] needs.
pub struct AvsConfig {
    /// TLS server config; [`run`] restricts ALPN to `h2`.
    pub tls: Arc<ServerConfig>,
    /// The key access tokens are verified with.
    pub token_key: Vec<u8>,
    /// The revocation list `avs-sim lwa` writes next to the key file.
    pub revocations: Option<PathBuf>,
    /// The MP3 spoken in answers.
    pub answer_mp3: Bytes,
    /// Dialog behaviour at start (the control API changes it).
    pub dialog: DialogSettings,
    /// See [`AvsArgs::idle_timeout_secs`]; `None` never closes.
    pub idle_timeout: Option<Duration>,
    /// See [`AvsArgs::connection_lifetime_secs`]; `None` never closes.
    pub connection_lifetime: Option<Duration>,
    /// The control API's listener, if any.
    pub control: Option<TcpListener>,
}

impl AvsConfig {
    /// Build from flags: the TLS files, the token key, the answer MP3. The
    /// control listener is bound by the caller, who prints its address.
    pub fn from_args(a: &AvsArgs) -> Result<Self, String> {
        let token_key = crate::token::load_or_generate_key(Some(&a.token_key_file))?;
        let tls = https::server_config(&a.tls_cert, &a.tls_key, None).map_err(|e| e.to_string())?;
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
            revocations: Some(crate::token::revocation_list(&a.token_key_file)),
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
            connection_lifetime: (a.connection_lifetime_secs > 0)
                .then(|| Duration::from_secs(a.connection_lifetime_secs)),
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
        config.revocations,
        config.answer_mp3,
        config.dialog,
        config.idle_timeout,
        config.connection_lifetime,
    ));
    let control = config
        .control
        .map(|l| tokio::spawn(control::serve(l, shared.clone(), shutdown.clone())));
    server::serve(listener, Arc::new(tls), shared, shutdown).await;
    if let Some(task) = control {
        let _ = task.await;
    }
}
