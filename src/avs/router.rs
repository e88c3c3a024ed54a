//! The directive router: every directive AVS sends goes to the handler of
//! its namespace. System is handled here; the speech interfaces go to the
//! dialog when it is attached; anything else is reported back to AVS with
//! `System.ExceptionEncountered`, as the protocol asks.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{ConnectionHandle, ContextSource};
use super::inbound::Inbound;
use super::message::{Directive, Event, ExceptionErrorType, KnownDirective};
use crate::auth::AuthHandle;
use crate::fsutil;

/// File in the state directory that keeps the endpoint AVS asked for.
pub const ENDPOINT_FILE: &str = "endpoint";

/// What the router needs.
pub struct Router {
    /// Where events go.
    pub connection: ConnectionHandle,
    /// For RevokeAuthorization.
    pub auth: AuthHandle,
    /// Where SetEndpoint is persisted.
    pub state_dir: PathBuf,
    /// After how long without user activity UserInactivityReport goes
    /// out, and then how often (the protocol says an hour).
    pub inactivity_report_every: Duration,
    /// Speech directives and attachments, once the dialog takes them.
    pub dialog: Option<mpsc::Sender<Inbound>>,
    /// The device's context, for ExceptionEncountered.
    pub context: ContextSource,
}

impl Router {
    /// Route until `inbound` closes or `shutdown` fires.
    pub async fn run(self, mut inbound: mpsc::Receiver<Inbound>, shutdown: CancellationToken) {
        // The System interface: report after an hour without user
        // activity, then every hour until the user does something.
        let every = self.inactivity_report_every;
        let mut last_activity = Instant::now();
        let mut next_report = last_activity + every;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_report) => {
                    let idle = last_activity.elapsed().as_secs();
                    tracing::debug!("reporting {idle} s without user activity");
                    self.send(Event::user_inactivity_report(idle).to_json()).await;
                    next_report += every;
                }
                item = inbound.recv() => match item {
                    None => return,
                    Some(item) => {
                        if self.route(item).await == Routed::ResetInactivity {
                            tracing::debug!("user activity: the inactivity clock restarts");
                            last_activity = Instant::now();
                            next_report = last_activity + every;
                        }
                    }
                },
            }
        }
    }

    async fn route(&self, item: Inbound) -> Routed {
        let (directive, raw) = match item {
            Inbound::Directive { directive, raw } => (directive, raw),
            Inbound::Malformed { raw, reason } => {
                tracing::warn!("AVS sent a part that is not a directive: {reason}");
                self.report(
                    &raw,
                    ExceptionErrorType::UnexpectedInformationReceived,
                    &reason,
                )
                .await;
                return Routed::Done;
            }
            Inbound::UserActivity => return Routed::ResetInactivity,
            // Dropping an attachment's receiver lets the stream skip its bytes.
            item @ (Inbound::Attachment { .. } | Inbound::Answered { .. }) => {
                // An answered Recognize means the user spoke: activity too.
                let spoke = matches!(item, Inbound::Answered { .. });
                if let Some(dialog) = &self.dialog {
                    let _ = dialog.send(item).await;
                }
                return if spoke {
                    Routed::ResetInactivity
                } else {
                    Routed::Done
                };
            }
        };
        let name = directive.qualified_name();
        tracing::debug!("directive {name}");
        match directive.known() {
            Ok(KnownDirective::ResetUserInactivity) => return Routed::ResetInactivity,
            Ok(KnownDirective::SetEndpoint(set)) => self.set_endpoint(set.endpoint).await,
            Ok(KnownDirective::RevokeAuthorization) => {
                tracing::warn!(
                    "the user deregistered this device at Amazon; forgetting its tokens"
                );
                if let Err(e) = self.auth.reset().await {
                    tracing::error!("cannot reset authorization: {e}");
                }
            }
            Ok(KnownDirective::Exception(e)) => tracing::warn!(
                "AVS reported an exception: {} {}",
                e.code,
                e.description.unwrap_or_default()
            ),
            Ok(_) => self.to_dialog(directive, raw).await,
            Err(e) => {
                tracing::warn!("cannot handle {name}: {e}");
                self.report(&raw, e.exception_type(), &e.to_string()).await;
            }
        }
        Routed::Done
    }

    async fn to_dialog(&self, directive: Directive, raw: String) {
        match &self.dialog {
            Some(dialog) => {
                let _ = dialog.send(Inbound::Directive { directive, raw }).await;
            }
            None => {
                let msg = format!(
                    "{} is not supported by this device",
                    directive.qualified_name()
                );
                self.report(&raw, ExceptionErrorType::UnsupportedOperation, &msg)
                    .await;
            }
        }
    }

    async fn set_endpoint(&self, endpoint: String) {
        let path = self.state_dir.join(ENDPOINT_FILE);
        if let Err(e) = fsutil::ensure_private_dir(&self.state_dir)
            .and_then(|()| fsutil::write_atomic(&path, endpoint.as_bytes()))
        {
            tracing::error!(
                "cannot save the new AVS endpoint in {}: {e}",
                path.display()
            );
        }
        if let Err(e) = self.connection.set_endpoint(endpoint).await {
            tracing::error!("cannot switch AVS endpoint: {e}");
        }
    }

    async fn report(&self, raw: &str, kind: ExceptionErrorType, message: &str) {
        let event = Event::exception_encountered(raw, kind, message, (self.context)());
        self.send(event.to_json()).await;
    }

    async fn send(&self, metadata: String) {
        // Reports must not hold up routing: send them on the side.
        let connection = self.connection.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.send(metadata, None).await {
                tracing::warn!("cannot send an event to AVS: {e}");
            }
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Routed {
    Done,
    ResetInactivity,
}

/// The endpoint AVS asked for earlier, if one was saved.
pub fn saved_endpoint(state_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(ENDPOINT_FILE)).ok()?;
    let url = text.trim();
    url::Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "https")
        .map(|_| url.to_string())
}
