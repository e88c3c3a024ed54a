//! The System interface: where AVS sends the device (SetEndpoint, kept in
//! the state directory so a restart connects there at once), the end of
//! the device's registration (RevokeAuthorization), the inactivity clock
//! (ResetUserInactivity and the hourly UserInactivityReport), and the
//! exceptions AVS reports. System has no context entry. SynchronizeState
//! and ExceptionEncountered, System events too, are sent by the connection
//! and the router, which build them from the registry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{CapabilityAgent, Env};
use crate::avs::discovery::Capability;
use avs_proto::message::{Directive, DirectiveError, Event, ExceptionPayload, SetEndpoint};
use kit::fsutil;

/// File in the state directory that keeps the endpoint AVS asked for.
pub const ENDPOINT_FILE: &str = "endpoint";

/// The System agent: the endpoint file and the inactivity clock.
pub struct System {
    state_dir: PathBuf,
    /// After how long without user activity UserInactivityReport goes
    /// out, and then how often.
    every: Duration,
    last_activity: Instant,
    next_report: Instant,
}

impl System {
    /// The clock starts now, as if the user had just done something.
    pub fn new(state_dir: PathBuf, every: Duration) -> Self {
        let now = Instant::now();
        Self {
            state_dir,
            every,
            last_activity: now,
            next_report: now + every,
        }
    }

    async fn set_endpoint(&self, endpoint: String, env: &Env) {
        let path = self.state_dir.join(ENDPOINT_FILE);
        if let Err(e) = fsutil::ensure_private_dir(&self.state_dir)
            .and_then(|()| fsutil::write_atomic(&path, endpoint.as_bytes()))
        {
            tracing::error!(
                "cannot save the new AVS endpoint in {}: {e}",
                path.display()
            );
        }
        if let Err(e) = env.connection.set_endpoint(endpoint).await {
            tracing::error!("cannot switch AVS endpoint: {e}");
        }
    }
}

impl CapabilityAgent for System {
    fn namespace(&self) -> &'static str {
        "System"
    }

    fn discovery(&self) -> Capability {
        Capability::new("System", "1.0")
    }

    fn directives(&self) -> &'static [&'static str] {
        &[
            "ResetUserInactivity",
            "SetEndpoint",
            "RevokeAuthorization",
            "Exception",
        ]
    }

    fn events(&self) -> &'static [&'static str] {
        &[
            "SynchronizeState",
            "UserInactivityReport",
            "ExceptionEncountered",
        ]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        _raw: &'a str,
        env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move {
            match directive.header.name.as_str() {
                "ResetUserInactivity" => self.user_activity(),
                "SetEndpoint" => {
                    let set = SetEndpoint::from_directive(directive)?;
                    self.set_endpoint(set.endpoint, env).await;
                }
                "RevokeAuthorization" => {
                    tracing::warn!(
                        "the user deregistered this device at Amazon; forgetting its tokens"
                    );
                    if let Err(e) = env.auth.reset().await {
                        tracing::error!("cannot reset authorization: {e}");
                    }
                }
                "Exception" => {
                    let e: ExceptionPayload = directive.payload()?;
                    tracing::warn!(
                        "AVS reported an exception: {} {}",
                        e.code,
                        e.description.unwrap_or_default()
                    );
                }
                _ => return Err(directive.unsupported()),
            }
            Ok(())
        })
    }

    fn user_activity(&mut self) {
        tracing::debug!("user activity: the inactivity clock restarts");
        self.last_activity = Instant::now();
        self.next_report = self.last_activity + self.every;
    }

    fn wake_at(&self) -> Option<Instant> {
        Some(self.next_report)
    }

    fn wake<'a>(&'a mut self, env: &'a Env) -> BoxFuture<'a, ()> {
        let idle = self.last_activity.elapsed().as_secs();
        tracing::debug!("reporting {idle} s without user activity");
        // Once an hour: never limited.
        env.send(Event::user_inactivity_report(idle).to_json(), None);
        self.next_report += self.every;
        Box::pin(std::future::ready(()))
    }
}

/// The endpoint AVS asked for earlier, if one was saved.
pub fn saved_endpoint(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(ENDPOINT_FILE)).ok()?;
    let url = text.trim();
    url::Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "https")
        .map(|_| url.to_string())
}
