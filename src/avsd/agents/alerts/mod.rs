//! The Alerts interface (timers, alarms, reminders), built to be relied on
//! as an alarm clock:
//!
//! - `store`: every alert is in `<state>/alerts/alerts.json`, written
//!   atomically and fsynced before SetAlertSucceeded is queued;
//! - `clock`: one `timerfd` on the wall clock, armed for the next alert
//!   only and woken when the clock is set; nothing rings before the clock
//!   is known to be synchronized on a machine without a real-time clock;
//! - `tone`: the sound, made in code, so an alert rings with no network;
//! - `outbox`: the events, kept on disk and sent in order once AVS takes
//!   them, so each reaches AVS once, after any outage or restart;
//! - `actor`: the task that owns all of it, beside the router;
//! - this file: the capability agent (Discovery, context, directives) and
//!   the [`AlertsHandle`] that D-Bus and `Dialog.Stop` use.
//!
//! avsd declares Alerts 1.3: the newest version whose events' payloads
//! (`{"token"}`, `{"tokens"}`) its documentation spells out in full; 1.3
//! has DeleteAlerts and the alerts volume directives.

mod actor;
pub mod assets;
pub mod clock;
pub mod outbox;
pub mod store;
pub mod tone;
mod validate;

use std::path::PathBuf;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CapabilityAgent, ContextReader, Env};
use crate::avs::connection::ConnectionHandle;
use crate::avs::discovery::Capability;
use actor::{Command, Outputs};
use avs_proto::message::{AlertsState, ContextEntry, Directive, DirectiveError};
use kit::actor::ActorError;

pub use actor::{Links, PAST_DUE_MS};

/// The interface version declared.
pub const VERSION: &str = "1.3";
/// Commands waiting for the actor (directives come one at a time from the
/// router; D-Bus calls are few).
const MAILBOX: usize = 32;

/// How many alerts avsd keeps, declared in Discovery's `maximumAlerts`
/// and enforced with SetAlertFailed.
pub mod limits {
    use super::store::Store;
    use avs_proto::message::AlertType;

    /// All alerts together.
    pub const OVERALL: usize = 200;
    /// Alarms.
    pub const ALARMS: usize = 100;
    /// Timers.
    pub const TIMERS: usize = 100;
    /// Assets one alert may name.
    pub const MAX_ASSETS: usize = 16;

    /// Whether one more alert of `kind` fits, or why not.
    pub fn room_for(store: &Store, kind: AlertType) -> Result<(), String> {
        if store.count(None) >= OVERALL {
            return Err(format!(
                "avsd already holds its maximum of {OVERALL} alerts"
            ));
        }
        match kind {
            AlertType::Alarm if store.count(Some(kind)) >= ALARMS => {
                Err(format!("avsd already holds its maximum of {ALARMS} alarms"))
            }
            AlertType::Timer if store.count(Some(kind)) >= TIMERS => {
                Err(format!("avsd already holds its maximum of {TIMERS} timers"))
            }
            _ => Ok(()),
        }
    }
}

/// One alert as D-Bus lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// AVS's token.
    pub token: String,
    /// `TIMER`, `ALARM` or `REMINDER`.
    pub kind: String,
    /// When it is due, in Unix seconds.
    pub due_unix: i64,
    /// Its label; empty when none.
    pub label: String,
}

/// The alerts as D-Bus shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertsView {
    /// Every alert held, earliest first.
    pub alerts: Vec<Listed>,
    /// The token of the alert sounding now; empty when none.
    pub active: String,
}

/// A handle on the alerts actor: cheap to clone.
#[derive(Clone)]
pub struct AlertsHandle {
    tx: mpsc::Sender<Command>,
    view: watch::Receiver<AlertsView>,
    context: watch::Receiver<AlertsState>,
}

impl AlertsHandle {
    /// Silence the ringing alert (it is over: AlertStopped follows);
    /// whether one was ringing. Works with no network.
    pub async fn stop(&self) -> Result<bool, ActorError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Stop(reply))
            .await
            .map_err(|_| ActorError::Gone("alerts"))?;
        answer.await.map_err(|_| ActorError::Gone("alerts"))
    }

    /// The alerts and the sounding one, as they change.
    pub fn view(&self) -> watch::Receiver<AlertsView> {
        self.view.clone()
    }

    async fn send(&self, cmd: Command) {
        // The actor is gone only while the daemon stops.
        let _ = self.tx.send(cmd).await;
    }
}

/// The actor's end of [`channel`], for [`spawn`].
pub struct AlertsInbox {
    rx: mpsc::Receiver<Command>,
    out: Outputs,
}

/// A handle for the agent and D-Bus, made before the actor can start (it
/// needs the connection, which needs the agents' Discovery entries).
pub fn channel() -> (AlertsHandle, AlertsInbox) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (view_tx, view) = watch::channel(AlertsView::default());
    let (context_tx, context) = watch::channel(AlertsState::default());
    (
        AlertsHandle { tx, view, context },
        AlertsInbox {
            rx,
            out: Outputs {
                view: view_tx,
                context: context_tx,
            },
        },
    )
}

/// Starts the actor and the outbox's sender.
pub fn spawn(
    inbox: AlertsInbox,
    links: Links,
    connection: ConnectionHandle,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let outbox = outbox::Outbox::open(&links.dir);
    tracker.spawn(outbox::run(outbox.clone(), connection, shutdown.clone()));
    tracker.spawn(actor::run(links, outbox, inbox.rx, inbox.out, shutdown));
}

/// Where the alerts live under the state directory.
pub fn dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("alerts")
}

/// The capability agent: hands each directive to the actor, in order.
pub struct Alerts {
    handle: AlertsHandle,
}

impl Alerts {
    /// The agent over the actor behind `handle`.
    pub fn new(handle: AlertsHandle) -> Self {
        Self { handle }
    }
}

/// The token of an Alerts directive: without one there is nothing to
/// answer SetAlertFailed about, so it is an exception.
fn token(directive: &Directive) -> Result<String, DirectiveError> {
    match directive.payload.get("token").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(directive.invalid("payload.token is missing or not a non-empty string".into())),
    }
}

fn volume(
    directive: &Directive,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, DirectiveError> {
    directive
        .payload
        .get("volume")
        .and_then(Value::as_i64)
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            directive.invalid(format!(
                "payload.volume is missing or not a whole number from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

impl CapabilityAgent for Alerts {
    fn namespace(&self) -> &'static str {
        "Alerts"
    }

    fn discovery(&self) -> Capability {
        let mut c = Capability::new("Alerts", VERSION);
        c.configurations = Some(json!({
            "maximumAlerts": {
                "overall": limits::OVERALL,
                "alarms": limits::ALARMS,
                "timers": limits::TIMERS,
            }
        }));
        c
    }

    fn context(&self) -> Option<ContextReader> {
        let state = self.handle.context.clone();
        Some(std::sync::Arc::new(move || {
            ContextEntry::AlertsState(state.borrow().clone())
        }))
    }

    fn directives(&self) -> &'static [&'static str] {
        &[
            "SetAlert",
            "DeleteAlert",
            "DeleteAlerts",
            "SetVolume",
            "AdjustVolume",
        ]
    }

    fn events(&self) -> &'static [&'static str] {
        &[
            "SetAlertSucceeded",
            "SetAlertFailed",
            "DeleteAlertSucceeded",
            "DeleteAlertFailed",
            "DeleteAlertsSucceeded",
            "DeleteAlertsFailed",
            "AlertStarted",
            "AlertStopped",
            "AlertEnteredForeground",
            "AlertEnteredBackground",
            "VolumeChanged",
        ]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        _raw: &'a str,
        _env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move {
            let cmd = match directive.header.name.as_str() {
                "SetAlert" => Command::Set {
                    token: token(directive)?,
                    payload: directive.payload.clone(),
                },
                "DeleteAlert" => Command::Delete {
                    tokens: vec![token(directive)?],
                    many: false,
                },
                "DeleteAlerts" => {
                    let tokens: Vec<String> = directive
                        .payload
                        .get("tokens")
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .filter(|t: &Vec<String>| t.len() <= limits::OVERALL * 2)
                        .ok_or_else(|| {
                            directive
                                .invalid("payload.tokens is missing or not a list of tokens".into())
                        })?;
                    Command::Delete { tokens, many: true }
                }
                "SetVolume" => Command::SetVolume(volume(directive, 0..=100)?),
                "AdjustVolume" => Command::AdjustVolume(volume(directive, -100..=100)?),
                _ => return Err(directive.unsupported()),
            };
            self.handle.send(cmd).await;
            Ok(())
        })
    }
}
