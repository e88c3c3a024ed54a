//! The SpeechRecognizer interface: the microphone. The dialog owns the
//! listening itself (it is one with the attention state); this agent
//! declares the interface, parses its directives once and hands them to
//! the dialog in the order AVS sent them, with the note that a Recognize's
//! answer is complete. Recognize and ExpectSpeechTimedOut are sent by the
//! dialog. SpeechRecognizer 2.x has no context entry avsd must send
//! (RecognizerState only describes a wake word, which avsd lacks).

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::{CapabilityAgent, Env, to_dialog};
use crate::avs::discovery::Capability;
use crate::avs::inbound::Inbound;
use crate::dialog::{Input, Speech};
use avs_proto::message::{Directive, DirectiveError};

/// The SpeechRecognizer agent.
pub struct SpeechRecognizer {
    dialog: mpsc::Sender<Input>,
}

impl SpeechRecognizer {
    /// Directives go to `dialog`.
    pub fn new(dialog: mpsc::Sender<Input>) -> Self {
        Self { dialog }
    }
}

impl CapabilityAgent for SpeechRecognizer {
    fn namespace(&self) -> &'static str {
        "SpeechRecognizer"
    }

    fn discovery(&self) -> Capability {
        Capability::new("SpeechRecognizer", "2.0")
    }

    fn directives(&self) -> &'static [&'static str] {
        &["StopCapture", "ExpectSpeech"]
    }

    fn events(&self) -> &'static [&'static str] {
        &["Recognize", "ExpectSpeechTimedOut"]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        raw: &'a str,
        _env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move {
            let speech = match directive.header.name.as_str() {
                "StopCapture" => Speech::StopCapture,
                "ExpectSpeech" => Speech::ExpectSpeech(directive.payload()?),
                _ => return Err(directive.unsupported()),
            };
            to_dialog(&self.dialog, directive, raw, speech).await;
            Ok(())
        })
    }

    fn inbound(&mut self, item: Inbound) -> BoxFuture<'_, Option<Inbound>> {
        Box::pin(async move {
            match item {
                // The end of a Recognize's answer: after its directives.
                item @ Inbound::Answered { .. } => {
                    let _ = self.dialog.send(Input::Inbound(item)).await;
                    None
                }
                item => Some(item),
            }
        })
    }
}
