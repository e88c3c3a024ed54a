//! The PlaybackController interface (1.1): the media buttons' events
//! (PlayCommandIssued, PauseCommandIssued, NextCommandIssued,
//! PreviousCommandIssued), which AVS answers with the AudioPlayer
//! directive that acts. It has no directives and no context; the events
//! are sent, with the device's context, by the player's actor, in order
//! with its own (`audio_player::PlayerLink::press`).

use futures_util::future::BoxFuture;

use super::{CapabilityAgent, Env};
use crate::avs::discovery::Capability;
use avs_proto::message::{Directive, DirectiveError};

/// The PlaybackController interface (1.1): the buttons' events. It has no
/// directives; the events are sent by the player's actor, with context.
pub struct PlaybackController;

impl CapabilityAgent for PlaybackController {
    fn namespace(&self) -> &'static str {
        "PlaybackController"
    }

    fn discovery(&self) -> Capability {
        Capability::new("PlaybackController", "1.1")
    }

    fn directives(&self) -> &'static [&'static str] {
        &[]
    }

    fn events(&self) -> &'static [&'static str] {
        &[
            "PlayCommandIssued",
            "PauseCommandIssued",
            "NextCommandIssued",
            "PreviousCommandIssued",
        ]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        _raw: &'a str,
        _env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move { Err(directive.unsupported()) })
    }
}
