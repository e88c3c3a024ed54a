//! The connection's lifecycle, one phase at a time: wait for a token,
//! connect, open the downchannel, announce the device, synchronize state,
//! then watch the link (ping, GOAWAY, downchannel end, 403) and start over.
//! Every phase runs inside [`Supervisor::until`], so commands (the
//! watchdog's ping among them) are answered at any point.

mod link_watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::link_watch::{report_malformed, watch_link};
use super::exchange::{SendError, exchange};
use super::{Command, ContextSource, Gate, Settings};
use crate::auth::{AuthHandle, AuthState, AuthStatus};
use crate::avs::discovery;
use crate::avs::inbound::{Inbound, PumpError, pump};
use crate::avs::link::{self, Closed, Endpoint, Link, LinkError};
use crate::avs::message::Event;
use crate::backoff::Backoff;
use crate::dialog::ConnectionState;
use crate::published::{Publisher, Subscriber};
use crate::secret::Secret;

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
    pub(super) rx: mpsc::Receiver<Command>,
    pub(super) shutdown: CancellationToken,
    /// Where to connect now (System.SetEndpoint changes it).
    pub(super) endpoint: String,
    /// A token AVS refused: wait for another before connecting again.
    pub(super) rejected: Option<Secret>,
    /// A malformed downchannel to report once a connection is usable again.
    pub(super) unreported: Option<String>,
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
            // (a GOAWAY handover, a new endpoint) avsd is reconnecting.
            if self.auth.status().borrow().state != AuthState::Authorized {
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
                    if self
                        .until(tokio::time::sleep(backoff.next_delay()))
                        .await
                        .is_err()
                    {
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
            let est = match self.until(attempt).await {
                Err(Interrupt::Shutdown) => return,
                Err(Interrupt::Reconnect) => continue,
                Ok(Ok(est)) => est,
                Ok(Err(e)) => {
                    if let ConnectError::Forbidden(token) = &e {
                        self.rejected = Some(token.clone());
                        let _ = self.auth.token_rejected(token.clone()).await;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "cannot connect to AVS (attempt {}, next try in {:.1} s): {e}",
                        backoff.attempt(),
                        delay.as_secs_f64()
                    );
                    self.publish(ConnectionState::Disconnected);
                    if self.until(tokio::time::sleep(delay)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            self.rejected = None;
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
                    tracing::warn!("AVS refused the access token; renewing it before reconnecting");
                    let _ = self.auth.token_rejected(token.clone()).await;
                    self.rejected = Some(token);
                }
                Ok(other) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "AVS connection lost ({other}); reconnecting in {:.1} s (attempt {})",
                        delay.as_secs_f64(),
                        backoff.attempt()
                    );
                    self.publish(ConnectionState::Disconnected);
                    if self.until(tokio::time::sleep(delay)).await.is_err() {
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
                        let _ = self.auth.token_rejected(token.clone()).await;
                        self.rejected = Some(token);
                        if self.link.borrow().is_some() {
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

    fn publish(&self, state: ConnectionState) {
        self.state.send_if_modified(|cur| {
            let changed = *cur != state;
            *cur = state;
            changed
        });
    }
}

/// Wait until the auth actor holds a valid token other than `rejected`.
async fn wait_for_token(auth: AuthHandle, rejected: Option<Secret>) {
    let mut status: Subscriber<AuthStatus> = auth.status();
    loop {
        if status.borrow_and_update().state == AuthState::Authorized {
            match auth.access_token().await {
                Ok(t) if Some(&t.value) != rejected.as_ref() => return,
                _ => {}
            }
        }
        if status.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
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
