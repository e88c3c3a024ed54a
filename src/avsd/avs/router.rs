//! The directive router: every directive AVS sends goes to the capability
//! agent of its namespace (`crate::agents`), which parses its payload once
//! and acts; attachments and end-of-answer notes go to the agent that takes
//! them. A directive no agent takes, or one its agent refuses, is reported
//! back to AVS with `System.ExceptionEncountered`, as the protocol asks,
//! within the limit of [`reports`] so that a flood of them cannot exhaust
//! memory. The router also runs the agents' timers.

mod reports;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::ContextSource;
use super::inbound::Inbound;
use crate::agents::{Env, Registry};
use avs_proto::message::{Event, ExceptionErrorType};

use self::reports::Reports;
pub use self::reports::{MAX_REPORTS_IN_FLIGHT, REPORT_BURST, REPORT_EVERY, SUMMARY_EVERY};

/// The router: the agents, and what they act with.
pub struct Router {
    agents: Registry,
    env: Env,
    /// The device's context, for ExceptionEncountered: the agents' own.
    context: ContextSource,
}

impl Router {
    /// Dispatch to `agents`, which act with `env`.
    pub fn new(agents: Registry, env: Env) -> Self {
        let context = agents.context_source();
        Self {
            agents,
            env,
            context,
        }
    }

    /// Route until `inbound` closes or `shutdown` fires.
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, shutdown: CancellationToken) {
        let mut reports = Reports::new();
        loop {
            let summary = reports.summary_due();
            let wake = self.agents.wake_at();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = sleep_until_some(wake) => self.agents.wake(&self.env).await,
                () = sleep_until_some(summary) => reports.summarize(),
                item = inbound.recv() => match item {
                    None => return,
                    Some(item) => self.route(item, &mut reports).await,
                },
            }
        }
    }

    async fn route(&mut self, item: Inbound, reports: &mut Reports) {
        let (directive, raw) = match item {
            Inbound::Directive { directive, raw } => (directive, raw),
            Inbound::Malformed { raw, reason } => {
                if let Some(permit) = reports.admit() {
                    tracing::warn!("AVS sent a part that is not a directive: {reason}");
                    let kind = ExceptionErrorType::UnexpectedInformationReceived;
                    self.report(&raw, kind, &reason, permit);
                }
                return;
            }
            Inbound::UserActivity => return self.agents.user_activity(),
            item @ (Inbound::Attachment { .. } | Inbound::Answered { .. }) => {
                // An answered Recognize means the user spoke: activity too.
                let spoke = matches!(item, Inbound::Answered { .. });
                // Dropping an attachment no agent takes lets the stream
                // skip its bytes.
                drop(self.agents.inbound(item).await);
                if spoke {
                    self.agents.user_activity();
                }
                return;
            }
        };
        let result = match self.agents.agent_for(&directive) {
            Ok(agent) => agent.handle(&directive, &raw, &self.env).await,
            Err(e) => Err(e),
        };
        // Logged only when reported: a flood is summed up instead.
        if let Err(e) = result
            && let Some(permit) = reports.admit()
        {
            let name = directive.qualified_name();
            tracing::warn!("cannot handle {name}: {e}; reporting it to AVS");
            self.report(&raw, e.exception_type(), &e.to_string(), permit);
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
        self.env.send(event.to_json(), Some(permit));
    }
}

/// Sleep until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
