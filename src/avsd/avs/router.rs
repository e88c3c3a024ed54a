//! The directive router: every directive AVS sends goes to the handler of
//! its namespace. System is handled here; the speech interfaces go to the
//! dialog when it is attached; anything else is reported back to AVS with
//! `System.ExceptionEncountered`, as the protocol asks, within the limit
//! of [`reports`] so that a flood of them cannot exhaust memory.

mod reports;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{ConnectionHandle, ContextSource};
use super::inbound::Inbound;
use crate::auth::AuthHandle;
use avs_proto::message::{Directive, Event, ExceptionErrorType, KnownDirective};
use kit::fsutil;

use self::reports::Reports;
pub use self::reports::{MAX_REPORTS_IN_FLIGHT, REPORT_BURST, REPORT_EVERY, SUMMARY_EVERY};

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
        let mut reports = Reports::new();
        loop {
            let summary = reports.summary_due();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_report) => {
                    let idle = last_activity.elapsed().as_secs();
                    tracing::debug!("reporting {idle} s without user activity");
                    // Once an hour: never limited.
                    self.send(Event::user_inactivity_report(idle).to_json(), None);
                    next_report += every;
                }
                () = sleep_until_some(summary) => reports.summarize(),
                item = inbound.recv() => match item {
                    None => return,
                    Some(item) => {
                        if self.route(item, &mut reports).await == Routed::ResetInactivity {
                            tracing::debug!("user activity: the inactivity clock restarts");
                            last_activity = Instant::now();
                            next_report = last_activity + every;
                        }
                    }
                },
            }
        }
    }

    async fn route(&self, item: Inbound, reports: &mut Reports) -> Routed {
        let (directive, raw) = match item {
            Inbound::Directive { directive, raw } => (directive, raw),
            Inbound::Malformed { raw, reason } => {
                if let Some(permit) = reports.admit() {
                    tracing::warn!("AVS sent a part that is not a directive: {reason}");
                    let kind = ExceptionErrorType::UnexpectedInformationReceived;
                    self.report(&raw, kind, &reason, permit);
                }
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
            Ok(_) => self.to_dialog(directive, raw, reports).await,
            // Logged only when reported: a flood is summed up instead.
            Err(e) => {
                if let Some(permit) = reports.admit() {
                    tracing::warn!("cannot handle {name}: {e}; reporting it to AVS");
                    self.report(&raw, e.exception_type(), &e.to_string(), permit);
                }
            }
        }
        Routed::Done
    }

    async fn to_dialog(&self, directive: Directive, raw: String, reports: &mut Reports) {
        let name = directive.qualified_name();
        match &self.dialog {
            Some(dialog) => {
                tracing::debug!("directive {name}");
                let _ = dialog.send(Inbound::Directive { directive, raw }).await;
            }
            None => {
                if let Some(permit) = reports.admit() {
                    let msg = format!("{name} is not supported by this device");
                    tracing::warn!("cannot handle {name}: {msg}; reporting it to AVS");
                    self.report(&raw, ExceptionErrorType::UnsupportedOperation, &msg, permit);
                }
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

    fn report(
        &self,
        raw: &str,
        kind: ExceptionErrorType,
        message: &str,
        permit: OwnedSemaphorePermit,
    ) {
        let event = Event::exception_encountered(raw, kind, message, (self.context)());
        self.send(event.to_json(), Some(permit));
    }

    /// Send an event on the side, so that it does not hold up routing; a
    /// report holds its `permit` until it is sent, which bounds how many
    /// such tasks exist.
    fn send(&self, metadata: String, permit: Option<OwnedSemaphorePermit>) {
        let connection = self.connection.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.send(metadata, None).await {
                tracing::warn!("cannot send an event to AVS: {e}");
            }
            drop(permit);
        });
    }
}

/// Sleep until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
