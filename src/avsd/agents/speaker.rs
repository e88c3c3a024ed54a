//! The Speaker interface (1.0): Alexa sets the volume (SetVolume),
//! moves it (AdjustVolume) and mutes it (SetMute). The volume itself has
//! one owner, `crate::volume`, shared with D-Bus and local buttons; this
//! agent parses the directives once, checks them as Amazon documents
//! (SetVolume 0 to 100, AdjustVolume -100 to 100, SetMute a boolean: a bad
//! value is refused with ExceptionEncountered UNEXPECTED_INFORMATION_RECEIVED
//! and changes nothing), hands them to the owner, and declares the context
//! entry (`VolumeState`). The owner's reporter sends VolumeChanged and
//! MuteChanged, after a directive or any other change.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{CapabilityAgent, ContextReader, Env};
use crate::avs::discovery::Capability;
use crate::volume::{Source, VolumeError, VolumeHandle};
use avs_proto::message::{ContextEntry, Directive, DirectiveError};

/// SetVolume's and AdjustVolume's payload: `volume`, a long (an integer;
/// Amazon's SDK refuses anything else).
#[derive(Deserialize)]
struct VolumePayload {
    volume: i64,
}

/// SetMute's payload.
#[derive(Deserialize)]
struct MutePayload {
    mute: bool,
}

/// The Speaker agent.
pub struct Speaker {
    volume: VolumeHandle,
}

impl Speaker {
    /// Changes go to `volume`, the volume's owner.
    pub fn new(volume: VolumeHandle) -> Self {
        Self { volume }
    }
}

impl CapabilityAgent for Speaker {
    fn namespace(&self) -> &'static str {
        "Speaker"
    }

    fn discovery(&self) -> Capability {
        Capability::new("Speaker", "1.0")
    }

    fn context(&self) -> Option<ContextReader> {
        let state = self.volume.state();
        Some(Arc::new(move || {
            ContextEntry::VolumeState(state.borrow().state())
        }))
    }

    fn directives(&self) -> &'static [&'static str] {
        &["SetVolume", "AdjustVolume", "SetMute"]
    }

    fn events(&self) -> &'static [&'static str] {
        &["VolumeChanged", "MuteChanged"]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        _raw: &'a str,
        _env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move {
            let result = match directive.header.name.as_str() {
                "SetVolume" => {
                    let p: VolumePayload = directive.payload()?;
                    if !(0..=100).contains(&p.volume) {
                        return Err(
                            directive.invalid(format!("volume {} is not from 0 to 100", p.volume))
                        );
                    }
                    self.volume.set(p.volume, Source::Avs).await
                }
                "AdjustVolume" => {
                    let p: VolumePayload = directive.payload()?;
                    if !(-100..=100).contains(&p.volume) {
                        return Err(directive
                            .invalid(format!("volume {} is not from -100 to 100", p.volume)));
                    }
                    self.volume.adjust(p.volume, Source::Avs).await
                }
                "SetMute" => {
                    let p: MutePayload = directive.payload()?;
                    self.volume.set_muted(p.mute, Source::Avs).await
                }
                _ => return Err(directive.unsupported()),
            };
            match result {
                Ok(_) => Ok(()),
                Err(VolumeError::OutOfRange(v)) => {
                    Err(directive.invalid(format!("volume {v} is out of range")))
                }
                Err(VolumeError::Actor(e)) => {
                    // The daemon is stopping or wedged; AVS hears nothing
                    // (it would be told of a change that did not happen).
                    tracing::error!("cannot change the volume: {e}");
                    Ok(())
                }
            }
        })
    }
}
