//! The SpeechSynthesizer interface: Alexa's voice. The dialog plays the
//! answer (its playing is one with the attention state); this agent
//! declares the interface and its context entry (the SpeechState the
//! dialog publishes), parses Speak once and hands it, and the MP3
//! attachments, to the dialog in the order AVS sent them. SpeechStarted,
//! SpeechFinished and SpeechInterrupted (1.3) are sent by the dialog.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::{CapabilityAgent, ContextReader, Env, to_dialog};
use crate::avs::discovery::Capability;
use crate::avs::inbound::Inbound;
use crate::dialog::{Input, Speech};
use avs_proto::message::{ContextEntry, Directive, DirectiveError, Speak, SpeechState};

/// The SpeechSynthesizer agent.
pub struct SpeechSynthesizer {
    dialog: mpsc::Sender<Input>,
    speech: watch::Receiver<SpeechState>,
}

impl SpeechSynthesizer {
    /// Directives and attachments go to `dialog`; `speech` is the state it
    /// publishes.
    pub fn new(dialog: mpsc::Sender<Input>, speech: watch::Receiver<SpeechState>) -> Self {
        Self { dialog, speech }
    }
}

impl CapabilityAgent for SpeechSynthesizer {
    fn namespace(&self) -> &'static str {
        "SpeechSynthesizer"
    }

    fn discovery(&self) -> Capability {
        // 1.3 has SpeechInterrupted, which barge-in sends.
        Capability::new("SpeechSynthesizer", "1.3")
    }

    fn context(&self) -> Option<ContextReader> {
        let speech = self.speech.clone();
        Some(Arc::new(move || {
            ContextEntry::SpeechState(speech.borrow().clone())
        }))
    }

    fn directives(&self) -> &'static [&'static str] {
        &["Speak"]
    }

    fn events(&self) -> &'static [&'static str] {
        &["SpeechStarted", "SpeechFinished", "SpeechInterrupted"]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        raw: &'a str,
        _env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move {
            let speech = match directive.header.name.as_str() {
                "Speak" => Speech::Speak(Speak::from_directive(directive)?),
                _ => return Err(directive.unsupported()),
            };
            to_dialog(&self.dialog, directive, raw, speech).await;
            Ok(())
        })
    }

    fn inbound(&mut self, item: Inbound) -> BoxFuture<'_, Option<Inbound>> {
        Box::pin(async move {
            match item {
                // Dropping an attachment's receiver would let the stream
                // skip its bytes; the dialog takes it.
                item @ Inbound::Attachment { .. } => {
                    let _ = self.dialog.send(Input::Inbound(item)).await;
                    None
                }
                item => Some(item),
            }
        })
    }
}
