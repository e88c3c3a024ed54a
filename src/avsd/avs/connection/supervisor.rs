//! The connection's lifecycle, one phase at a time: wait for a token,
//! connect, open the downchannel, announce the device, synchronize state,
//! then watch the link (ping, GOAWAY, downchannel end, 403) and start over.
//! Every phase runs inside [`Supervisor::until`], so commands (the
//! watchdog's ping among them) are answered at any point.

mod link_watch;
mod token_wait;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::link_watch::{report_malformed, watch_link};
use self::token_wait::wait_for_token;
use super::ConnectionState;
use super::exchange::{SendError, exchange};
use super::{Command, ContextSource, Gate, Settings};
use crate::auth::{AuthHandle, AuthState};
use crate::avs::discovery;
use crate::avs::inbound::{Inbound, PumpError, pump};
use crate::avs::link::{self, Closed, Endpoint, Link, LinkError};
use avs_proto::message::Event;
use kit::backoff::Backoff;
use kit::published::Publisher;
use kit::secret::Secret;

/// The downchannel path of AVS v20160207.
pub const DIRECTIVES_PATH: &str = "/v20160207/directives";

pub(super) struct Supervisor {
    pub(super) settings: Arc<Settings>,
    pub(super) auth: AuthHandle,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) context: ContextSource,
    pub(super) gate: Arc<Gate>,
    pub(super) link: watch::Sender<Option<Link>>,
    pub(super) state: Publisher<ConnectionState>,
    /// The reconnect back-off, for `avsctl status` and the log.
    pub(super) reconnect: Publisher<super::Reconnect>,
    pub(super) rx: mpsc::Receiver<Command>,
    pub(super) shutdown: CancellationToken,
    /// Where to connect now (System.SetEndpoint changes it).
    pub(super) endpoint: String,
    /// A token AVS refused: wait for another before connecting again.
    pub(super) rejected: Option<Secret>,
    /// A malformed downchannel to report once a connection is usable again.
    pub(super) unreported: Option<String>,
    /// A connection attempt is under way (see [`Supervisor::until`]).
    pub(super) establishing: bool,
}

/// How a phase ended early.
enum Interrupt {
    Shutdown,
    Reconnect,
}

/// Why a connected link was given up.
#[derive(Debug)]
enum End {
    Downchannel(String),
    /// Malformed bytes, and the downchannel could not be reopened: the
    /// report waits for the next connection.
    Malformed {
        reopen: String,
        report: String,
    },
    Closed(Closed),
    Ping(String),
    Forbidden(Secret),
    AuthLost,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Downchannel(why) | End::Ping(why) => f.write_str(why),
            End::Malformed { reopen, .. } => f.write_str(reopen),
            End::Closed(Closed::Graceful) => f.write_str("AVS closed the connection"),
            End::Closed(Closed::Broken(why)) => write!(f, "the connection broke: {why}"),
            End::Forbidden(_) => f.write_str("AVS refused the access token"),
            End::AuthLost => f.write_str("no valid access token"),
        }
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("no valid access token: {0}")]
    Token(String),
    #[error("AVS refused the access token (HTTP 403)")]
    Forbidden(Secret),
    #[error("the downchannel answered HTTP {0}")]
    Status(u16),
    #[error("the downchannel did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{what} failed: {source}")]
    PostConnect {
        what: &'static str,
        source: SendError,
    },
}

impl ConnectError {
    /// The token AVS answered 403 to, on the downchannel or on an event
    /// sent while connecting.
    fn refused_token(&self) -> Option<Secret> {
        match self {
            ConnectError::Forbidden(t)
            | ConnectError::PostConnect {
                source: SendError::Forbidden(t),
                ..
            } => Some(t.clone()),
            _ => None,
        }
    }
}

struct Established {
    link: Link,
    downchannel: Downchannel,
}

/// The downchannel reader: how it ended, and its task, which is stopped when
/// the link is given up so that the old connection really closes.
struct Downchannel {
    done: oneshot::Receiver<Result<(), PumpError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Downchannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Supervisor {
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::avs_connect();
        loop {
            // Without a token there is nothing to connect with; with one
            // (a GOAWAY handover, a new endpoint) avsd is reconnecting. A
            // refused token is as good as none until another arrives.
            if self.auth.status().borrow().state != AuthState::Authorized || self.rejected.is_some()
            {
                self.publish(ConnectionState::Disconnected);
            }
            let waited = self
                .until(wait_for_token(self.auth.clone(), self.rejected.clone()))
                .await;
            match waited {
                Err(Interrupt::Shutdown) => return,
                Err(Interrupt::Reconnect) => continue,
                Ok(()) => {}
            }
            let endpoint = match Endpoint::new(&self.endpoint, self.settings.ca_file.as_deref()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(
                        "cannot use AVS endpoint {}: {e}; back to the configured one",
                        self.endpoint
                    );
                    self.endpoint = self.settings.endpoint.clone();
                    let delay = self.next_try(&mut backoff);
                    if !self.pause(delay).await {
                        return;
                    }
                    continue;
                }
            };
            self.publish(ConnectionState::Connecting);
            tracing::info!("connecting to AVS at {}", endpoint.authority());
            let attempt = establish(
                endpoint,
                self.settings.clone(),
                self.auth.clone(),
                self.inbound.clone(),
                self.context.clone(),
                self.gate.clone(),
            );
            self.establishing = true;
            let attempt = self.until(attempt).await;
            self.establishing = false;
            let est = match attempt {
                Err(Interrupt::Shutdown) => return,
                Err(Interrupt::Reconnect) => continue,
                Ok(Ok(est)) => est,
                Ok(Err(e)) => {
                    self.publish(ConnectionState::Disconnected);
                    if let Some(token) = e.refused_token() {
                        // Waiting for another token is the pause here; the
                        // companion limits how fast refusals get new ones.
                        tracing::warn!(
                            "cannot connect to AVS: {e}; waiting for a new access token, then \
                             connecting at once"
                        );
                        self.refuse(token).await;
                        continue;
                    }
                    let attempt = backoff.attempt() + 1;
                    let delay = self.next_try(&mut backoff);
                    tracing::warn!(
                        "cannot connect to AVS (attempt {attempt}, next try in {:.1} s): {e}",
                        delay.as_secs_f64()
                    );
                    if !self.pause(delay).await {
                        return;
                    }
                    continue;
                }
            };
            self.rejected = None;
            self.reconnect.send_if_modified(|r| {
                let changed = r.next_try_at.is_some();
                r.next_try_at = None;
                changed
            });
            let up_since = Instant::now();
            self.link.send_replace(Some(est.link.clone()));
            self.publish(ConnectionState::Connected);
            tracing::info!("connected to AVS");
            if let Some(report) = self.unreported.take() {
                report_malformed(&self.inbound, report).await;
            }
            let watched = watch_link(
                est,
                self.settings.clone(),
                self.auth.clone(),
                self.inbound.clone(),
            );
            let end = match self.until(watched).await {
                Ok(End::Malformed { reopen, report }) => {
                    self.unreported = Some(report);
                    Ok(End::Downchannel(reopen))
                }
                end => end,
            };
            self.link.send_replace(None);
            if up_since.elapsed() >= self.settings.stable_after {
                backoff.reset();
                self.reconnect.send_replace(super::Reconnect::default());
            }
            match end {
                Err(Interrupt::Shutdown) => return,
                Err(Interrupt::Reconnect) => {}
                // GOAWAY: AVS wants us on a fresh connection now; the old
                // one finishes its streams while the new one comes up.
                Ok(End::Closed(Closed::Graceful))
                    if up_since.elapsed() >= self.settings.stable_after =>
                {
                    tracing::info!("AVS closed the connection (GOAWAY); reconnecting")
                }
                Ok(End::AuthLost) => tracing::info!("no valid token any more; disconnected"),
                Ok(End::Forbidden(token)) => {
                    self.publish(ConnectionState::Disconnected);
                    tracing::warn!(
                        "AVS refused the access token; disconnected, waiting for a new token, \
                         then reconnecting at once"
                    );
                    self.refuse(token).await;
                }
                Ok(other) => {
                    self.publish(ConnectionState::Disconnected);
                    let attempt = backoff.attempt() + 1;
                    let delay = self.next_try(&mut backoff);
                    tracing::warn!(
                        "AVS connection lost ({other}); reconnecting in {:.1} s (attempt {attempt})",
                        delay.as_secs_f64(),
                    );
                    if !self.pause(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Run `fut` while answering commands; a command that changes where or
    /// how to connect interrupts it.
    async fn until<F: Future>(&mut self, fut: F) -> Result<F::Output, Interrupt> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Interrupt::Shutdown),
                out = &mut fut => return Ok(out),
                cmd = self.rx.recv() => match cmd {
                    None => return Err(Interrupt::Shutdown),
                    Some(Command::Ping(reply)) => { let _ = reply.send(()); }
                    Some(Command::Forbidden(token)) => {
                        if self.rejected.as_ref() == Some(&token) {
                            continue;
                        }
                        let connected = self.link.borrow().is_some();
                        if connected {
                            // The link is useless with a refused token:
                            // never `connected` while nothing can pass.
                            self.publish(ConnectionState::Disconnected);
                            tracing::warn!(
                                "AVS refused the access token on an event; disconnected, waiting \
                                 for a new token, then reconnecting at once"
                            );
                        }
                        self.refuse(token).await;
                        // While connecting, the attempt meets the refusal
                        // itself (or uses a newer token); anywhere else
                        // (connected, pausing, waiting for a token) start
                        // over at once with the refusal known.
                        if !self.establishing {
                            return Err(Interrupt::Reconnect);
                        }
                    }
                    Some(Command::SetEndpoint(url)) => {
                        let url = super::endpoint_for(&url);
                        if url != self.endpoint {
                            tracing::info!("AVS asked to use endpoint {url}; switching");
                            self.endpoint = url;
                            return Err(Interrupt::Reconnect);
                        }
                    }
                },
            }
        }
    }

    /// Sleep a back-off delay while answering commands; false on shutdown.
    /// A refused token or a new endpoint ends the pause early, and the loop
    /// goes on at once (after a refusal, to wait for the new token: AVS
    /// closes a connection after a 403, so the link may have ended before
    /// the refusal reached this task).
    async fn pause(&mut self, delay: Duration) -> bool {
        !matches!(
            self.until(tokio::time::sleep(delay)).await,
            Err(Interrupt::Shutdown)
        )
    }

    /// Tell the auth actor AVS refused `token` and wait for another.
    async fn refuse(&mut self, token: Secret) {
        let _ = self.auth.token_rejected(token.clone()).await;
        self.rejected = Some(token);
    }

    /// Draw the next back-off delay, publish it and log it in full.
    fn next_try(&self, backoff: &mut Backoff) -> Duration {
        let ceiling = backoff.next_ceiling();
        let delay = backoff.next_delay();
        let attempt = u32::try_from(backoff.attempt()).unwrap_or(u32::MAX);
        let next_try_at = std::time::SystemTime::now() + delay;
        // Worded apart from the warnings' "next try in" / "reconnecting
        // in", which tests and people read as the one delay per attempt.
        tracing::info!(
            "reconnect back-off: attempt {attempt}, waiting {:.2} s of a ceiling of {:.2} s \
             (the back-off starts over after {} s connected)",
            delay.as_secs_f64(),
            ceiling.as_secs_f64(),
            self.settings.stable_after.as_secs()
        );
        self.reconnect.send_replace(super::Reconnect {
            attempt,
            ceiling,
            next_try_at: Some(next_try_at),
        });
        delay
    }

    fn publish(&self, state: ConnectionState) {
        self.state.send_if_modified(|cur| {
            let changed = *cur != state;
            *cur = state;
            changed
        });
    }
}

async fn establish(
    endpoint: Endpoint,
    settings: Arc<Settings>,
    auth: AuthHandle,
    inbound: mpsc::Sender<Inbound>,
    context: ContextSource,
    gate: Arc<Gate>,
) -> Result<Established, ConnectError> {
    let token = auth
        .access_token()
        .await
        .map_err(|e| ConnectError::Token(e.to_string()))?;
    let link = link::connect(&endpoint).await?;
    let downchannel = open_downchannel(&link, &token.value, &settings, &inbound).await?;
    let post = |what: &'static str| move |source| ConnectError::PostConnect { what, source };
    let report = discovery::add_or_update_report(&settings.identity, &token.value);
    exchange(&link, &auth, &gate, &settings, &inbound, report, None)
        .await
        .map_err(post("Alexa.Discovery.AddOrUpdateReport"))?;
    let sync = Event::synchronize_state(context()).to_json();
    exchange(&link, &auth, &gate, &settings, &inbound, sync, None)
        .await
        .map_err(post("System.SynchronizeState"))?;
    Ok(Established { link, downchannel })
}

/// GET the downchannel and read it on its own task; the receiver learns how
/// it ended.
async fn open_downchannel(
    link: &Link,
    token: &Secret,
    settings: &Settings,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<Downchannel, ConnectError> {
    let resp = tokio::time::timeout(
        settings.downchannel_timeout,
        link.get(DIRECTIVES_PATH, token),
    )
    .await
    .map_err(|_| ConnectError::Timeout(settings.downchannel_timeout))??;
    match resp.status().as_u16() {
        200 => {}
        403 => return Err(ConnectError::Forbidden(token.clone())),
        other => return Err(ConnectError::Status(other)),
    }
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (done_tx, done) = oneshot::channel();
    let out = inbound.clone();
    let task = tokio::spawn(async move {
        let result = pump(resp.into_body(), &content_type, &out, None).await;
        let _ = done_tx.send(result);
    });
    Ok(Downchannel { done, task })
}
