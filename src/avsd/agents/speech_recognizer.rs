//! The SpeechRecognizer interface: the microphone. The dialog owns the
//! listening itself (it is one with the attention state); this agent
//! declares the interface, parses its directives once and hands them to
//! the dialog in the order AVS sent them, with the note that a Recognize's
//! answer is complete. Recognize and ExpectSpeechTimedOut are sent by the
//! dialog. SpeechRecognizer 2.x has no context entry avsd must send
//! (RecognizerState, removed in 2.3, described the wake word).
//!
//! With a wake-word model loaded avsd declares SpeechRecognizer 2.3, the
//! version that brought the `wakeWords` configuration and the Recognize's
//! `wakeWord` field: AVS takes a WAKEWORD Recognize only for a word the
//! device declared. Without one it stays at 2.0 (talk button only).

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use serde_json::json;

use super::{CapabilityAgent, Env, to_dialog};
use crate::avs::discovery::Capability;
use crate::avs::inbound::Inbound;
use crate::dialog::{Input, Speech};
use avs_proto::message::{Directive, DirectiveError};

/// The wake word avsd puts in a woken Recognize (SpeechRecognizer 2.3's
/// `wakeWord`), and declares in `wakeWords`.
pub const WAKE_WORD: &str = "ALEXA";

/// The SpeechRecognizer agent.
pub struct SpeechRecognizer {
    dialog: mpsc::Sender<Input>,
    wake_word: bool,
}

impl SpeechRecognizer {
    /// Directives go to `dialog`; `wake_word`: a wake-word model is loaded,
    /// so "Alexa" can start a Recognize.
    pub fn new(dialog: mpsc::Sender<Input>, wake_word: bool) -> Self {
        Self { dialog, wake_word }
    }
}

impl CapabilityAgent for SpeechRecognizer {
    fn namespace(&self) -> &'static str {
        "SpeechRecognizer"
    }

    fn discovery(&self) -> Capability {
        if !self.wake_word {
            return Capability::new("SpeechRecognizer", "2.0");
        }
        let mut c = Capability::new("SpeechRecognizer", "2.3");
        // One wake word, in the one scope AVS documents (DEFAULT): the
        // words a device listens for everywhere.
        c.configurations = Some(json!({
            "wakeWords": [{"scopes": ["DEFAULT"], "values": [[WAKE_WORD]]}]
        }));
        c
    }

    fn directives(&self) -> &'static [&'static str] {
        if self.wake_word {
            // 2.3's SetEndOfSpeechOffset only informs (latency figures);
            // its settings directives (SetWakeWords, …) are answered as
            // unsupported: avsd has one word and no confirmation tones.
            &["StopCapture", "ExpectSpeech", "SetEndOfSpeechOffset"]
        } else {
            &["StopCapture", "ExpectSpeech"]
        }
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
                "SetEndOfSpeechOffset" if self.wake_word => {
                    tracing::debug!("SetEndOfSpeechOffset: {raw}");
                    return Ok(());
                }
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
