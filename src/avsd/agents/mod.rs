//! Capability agents: one module per AVS interface. Each agent owns the
//! state of its interface and declares, in one place, what AVS must know of
//! it: its `Alexa.Discovery` entry, its context entry, the directives it
//! takes and the events it sends. The [`Registry`] built at daemon start is
//! the only list of interfaces: the capability list of
//! `Alexa.Discovery.AddOrUpdateReport`, the context of every event and the
//! router's dispatch all come from it.
//!
//! # Adding an interface
//!
//! Write one module, say `src/avsd/agents/speaker.rs`, with a type implementing
//! [`CapabilityAgent`]:
//!
//! ```ignore
//! pub struct Speaker { volume: watch::Receiver<VolumeState> }
//!
//! impl CapabilityAgent for Speaker {
//!     fn namespace(&self) -> &'static str { "Speaker" }
//!     fn discovery(&self) -> Capability { Capability::new("Speaker", "1.0") }
//!     fn context(&self) -> Option<ContextReader> {
//!         let volume = self.volume.clone();
//!         Some(Arc::new(move || ContextEntry::VolumeState(*volume.borrow())))
//!     }
//!     fn directives(&self) -> &'static [&'static str] { &["SetVolume", "AdjustVolume"] }
//!     fn events(&self) -> &'static [&'static str] { &["VolumeChanged"] }
//!     fn handle<'a>(&'a mut self, directive: &'a Directive, _raw: &'a str, env: &'a Env)
//!         -> BoxFuture<'a, Result<(), DirectiveError>>
//!     {
//!         Box::pin(async move {
//!             let set: SetVolume = directive.payload()?; // parsed here, once
//!             // ... act, then env.send(...) the event
//!             Ok(())
//!         })
//!     }
//! }
//! ```
//!
//! then add `mod speaker;` here and one line to [`for_daemon`]:
//! `registry.register(speaker::Speaker::new(...))?;`. Discovery, context
//! and routing follow.

pub mod alerts;
pub mod audio_player;
pub mod playback_controller;
pub mod speaker;
pub mod speech_recognizer;
pub mod speech_synthesizer;
pub mod system;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;

use crate::auth::AuthHandle;
use crate::avs::connection::{ConnectionHandle, ContextSource};
use crate::avs::discovery::Capability;
use crate::avs::inbound::Inbound;
use crate::dialog::{Input, Speech, SpeechDirective};
use avs_proto::message::{ContextEntry, Directive, DirectiveError, SpeechState};

/// Reads one agent's context entry as it is now; called from other tasks
/// (the connection's SynchronizeState, the dialog's Recognize).
pub type ContextReader = Arc<dyn Fn() -> ContextEntry + Send + Sync>;

/// What an agent may use while it handles a directive or a timer: the
/// actors the daemon starts after the registry exists (the connection
/// needs the registry's Discovery entries and context first).
#[derive(Clone)]
pub struct Env {
    /// Where events go.
    pub connection: ConnectionHandle,
    /// The login, for RevokeAuthorization.
    pub auth: AuthHandle,
}

impl Env {
    /// Send an event on the side, so that it does not hold up routing. A
    /// caller sending in response to the network passes a `permit` that
    /// bounds how many such sends exist; it is held until the event is sent.
    pub fn send(&self, metadata: String, permit: Option<OwnedSemaphorePermit>) {
        let connection = self.connection.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.send(metadata, None).await {
                tracing::warn!("cannot send an event to AVS: {e}");
            }
            drop(permit);
        });
    }
}

/// One AVS interface. The router owns the agents and calls them one at a
/// time, so an agent's state needs no lock; what other tasks read (the
/// context) goes through a [`ContextReader`].
pub trait CapabilityAgent: Send {
    /// The interface's namespace: directives of it come to this agent.
    fn namespace(&self) -> &'static str;

    /// The entry in `Alexa.Discovery.AddOrUpdateReport`.
    fn discovery(&self) -> Capability;

    /// The interface's context entry, for interfaces that have one.
    fn context(&self) -> Option<ContextReader> {
        None
    }

    /// The directive names it takes; any other name of its namespace is
    /// reported to AVS as unsupported without reaching [`Self::handle`].
    fn directives(&self) -> &'static [&'static str];

    /// The event names it sends (for the reader and the tests).
    fn events(&self) -> &'static [&'static str];

    /// Act on one directive of [`Self::directives`]: parse its payload
    /// (once, here) and act. An error is reported to AVS by the router
    /// with `System.ExceptionEncountered`, within its limits.
    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        raw: &'a str,
        env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>>;

    /// An item of AVS's stream that is not a directive (an attachment, the
    /// end of an answer): taken by the agent it belongs to, or handed back.
    fn inbound(&mut self, item: Inbound) -> BoxFuture<'_, Option<Inbound>> {
        Box::pin(std::future::ready(Some(item)))
    }

    /// The user did something (a talk button, speaking to Alexa).
    fn user_activity(&mut self) {}

    /// When the agent next wants [`Self::wake`], if ever (its timers).
    fn wake_at(&self) -> Option<Instant> {
        None
    }

    /// [`Self::wake_at`] has come.
    fn wake<'a>(&'a mut self, _env: &'a Env) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Two agents claimed one namespace.
#[derive(Debug, thiserror::Error)]
#[error("two capability agents claim the namespace {0}; register each interface once")]
pub struct DuplicateNamespace(pub &'static str);

/// The registered agents, in registration order (the order of Discovery).
#[derive(Default)]
pub struct Registry {
    agents: Vec<Box<dyn CapabilityAgent>>,
}

impl Registry {
    /// Add an agent; each namespace once.
    pub fn register(
        &mut self,
        agent: impl CapabilityAgent + 'static,
    ) -> Result<(), DuplicateNamespace> {
        let namespace = agent.namespace();
        if self.agents.iter().any(|a| a.namespace() == namespace) {
            return Err(DuplicateNamespace(namespace));
        }
        self.agents.push(Box::new(agent));
        Ok(())
    }

    /// The namespaces, in registration order.
    pub fn namespaces(&self) -> Vec<&'static str> {
        self.agents.iter().map(|a| a.namespace()).collect()
    }

    /// The capability list for `Alexa.Discovery.AddOrUpdateReport`.
    pub fn discovery(&self) -> Vec<Capability> {
        self.agents.iter().map(|a| a.discovery()).collect()
    }

    /// The device's context: every agent's entry, read when called.
    pub fn context_source(&self) -> ContextSource {
        let readers: Vec<ContextReader> = self.agents.iter().filter_map(|a| a.context()).collect();
        Arc::new(move || readers.iter().map(|read| read()).collect())
    }

    /// The agent that takes `directive`, or why none does.
    pub fn agent_for(
        &mut self,
        directive: &Directive,
    ) -> Result<&mut dyn CapabilityAgent, DirectiveError> {
        let h = &directive.header;
        match self
            .agents
            .iter_mut()
            .find(|a| a.namespace() == h.namespace)
        {
            Some(agent) if agent.directives().contains(&h.name.as_str()) => Ok(agent.as_mut()),
            _ => Err(directive.unsupported()),
        }
    }

    /// Offer a non-directive item to each agent; what none takes comes back.
    pub async fn inbound(&mut self, item: Inbound) -> Option<Inbound> {
        let mut item = item;
        for agent in &mut self.agents {
            item = agent.inbound(item).await?;
        }
        Some(item)
    }

    /// Tell every agent the user did something.
    pub fn user_activity(&mut self) {
        for agent in &mut self.agents {
            agent.user_activity();
        }
    }

    /// The earliest timer of any agent.
    pub fn wake_at(&self) -> Option<Instant> {
        self.agents.iter().filter_map(|a| a.wake_at()).min()
    }

    /// Wake the agents whose timer has come.
    pub async fn wake(&mut self, env: &Env) {
        let now = Instant::now();
        for agent in &mut self.agents {
            if agent.wake_at().is_some_and(|at| at <= now) {
                agent.wake(env).await;
            }
        }
    }
}

/// What the daemon's agents are built from.
pub struct Deps {
    /// Where System keeps the endpoint AVS asked for.
    pub state_dir: PathBuf,
    /// System's UserInactivityReport period (the protocol says an hour).
    pub inactivity_report_every: Duration,
    /// The dialog's queue, which the speech agents feed in order.
    pub dialog: mpsc::Sender<Input>,
    /// The SpeechSynthesizer state the dialog publishes.
    pub speech: watch::Receiver<SpeechState>,
    /// The volume's owner, for Speaker.
    pub volume: crate::volume::VolumeHandle,
    /// The music player's handle (its actor starts after the connection).
    pub player: audio_player::PlayerLink,
    /// The alerts actor, started once the connection exists.
    pub alerts: alerts::AlertsHandle,
    /// A wake-word model is loaded: SpeechRecognizer declares its word.
    pub wake_word: bool,
}

/// The daemon's agents: one line per AVS interface.
pub fn for_daemon(deps: Deps) -> Result<Registry, DuplicateNamespace> {
    let mut registry = Registry::default();
    registry.register(system::System::new(
        deps.state_dir,
        deps.inactivity_report_every,
    ))?;
    registry.register(speech_recognizer::SpeechRecognizer::new(
        deps.dialog.clone(),
        deps.wake_word,
    ))?;
    // Before SpeechSynthesizer, which takes every attachment it is offered:
    // the player takes those its Plays name.
    registry.register(audio_player::AudioPlayer::new(deps.player))?;
    registry.register(playback_controller::PlaybackController)?;
    registry.register(speech_synthesizer::SpeechSynthesizer::new(
        deps.dialog,
        deps.speech,
    ))?;
    registry.register(speaker::Speaker::new(deps.volume))?;
    registry.register(alerts::Alerts::new(deps.alerts))?;
    Ok(registry)
}

/// Hand a directive its agent has parsed to the dialog, which owns the
/// attention state; the queue keeps AVS's order.
async fn to_dialog(dialog: &mpsc::Sender<Input>, directive: &Directive, raw: &str, speech: Speech) {
    tracing::debug!("directive {}", directive.qualified_name());
    let input = Input::Directive(SpeechDirective {
        header: directive.header.clone(),
        raw: raw.to_owned(),
        directive: speech,
    });
    // The dialog is gone only while the daemon stops.
    let _ = dialog.send(input).await;
}

#[cfg(test)]
mod tests;
