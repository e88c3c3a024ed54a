//! Alexa's answer: the directives of the current dialog, run in order
//! (StopCapture at once; Speak and ExpectSpeech queued), their attachments,
//! and the player's progress.

use std::time::Duration;

use super::{Dialog, Queued};
use crate::audio::PlayerEvent;
use crate::avs::inbound::Inbound;
use crate::dialog::speech::{Progress, Speaking};
use crate::dialog::{DialogReason, Speech, SpeechDirective};
use avs_proto::message::{Event, ExceptionErrorType, SpeechActivity};

/// How long a Speak from the downchannel waits for its audio part.
const ATTACHMENT_WAIT: Duration = Duration::from_secs(3);

/// Speak and ExpectSpeech directives that may wait their turn. An answer
/// brings a few; more is a flood from the network, each holding its JSON,
/// and draining at most one per [`ATTACHMENT_WAIT`].
const MAX_QUEUED: usize = 16;

impl Dialog {
    pub(super) async fn inbound(&mut self, item: Inbound) {
        match item {
            Inbound::Attachment { content_id, data } => {
                self.attachments.insert(content_id, data);
                self.advance().await;
            }
            Inbound::Answered {
                dialog_request_id,
                outcome,
            } => {
                if self.current.as_deref() != Some(&dialog_request_id) {
                    return;
                }
                self.awaiting_answer = false;
                self.upload = None;
                if let Err((reason, msg)) = outcome {
                    tracing::warn!("{msg}");
                    self.set_error(reason, msg);
                    if let Some(l) = self.listening.take() {
                        l.abort.cancel();
                    }
                }
                self.advance().await;
            }
            // Directives come typed, from their agents (`Input::Directive`).
            Inbound::Directive { .. } | Inbound::Malformed { .. } | Inbound::UserActivity => {}
        }
    }

    pub(super) async fn directive(&mut self, directive: SpeechDirective) {
        let name = directive.qualified_name();
        let stale = match (&directive.header.dialog_request_id, &self.current) {
            (Some(theirs), Some(ours)) => theirs != ours,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if stale {
            tracing::debug!("dropping {name} of an earlier dialog");
            return;
        }
        let SpeechDirective { directive, raw, .. } = directive;
        match directive {
            Speech::StopCapture => {
                if let Some(l) = self.listening.take_if(|l| !l.hold && l.pending.is_none()) {
                    tracing::info!("StopCapture: closing the microphone");
                    l.stop.cancel();
                }
            }
            directive @ (Speech::Speak(_) | Speech::ExpectSpeech(_)) => {
                if self.queue.len() >= MAX_QUEUED {
                    self.dropped += 1;
                    if self.dropped == 1 {
                        tracing::warn!(
                            "{MAX_QUEUED} speech directives already wait their turn; dropping \
                             {name} and any more until they have run"
                        );
                    }
                    return;
                }
                self.queue.push_back(Queued { directive, raw });
                self.advance().await;
            }
        }
    }

    /// Run the next queued directive if nothing else is going on.
    pub(super) async fn advance(&mut self) {
        while self.listening.is_none() && self.speaking.is_none() {
            let Some(next) = self.queue.front() else {
                if self.dropped > 0 {
                    tracing::warn!(
                        "dropped {} speech directives that came while {MAX_QUEUED} waited",
                        std::mem::take(&mut self.dropped)
                    );
                }
                return;
            };
            match &next.directive {
                Speech::Speak(speak) => {
                    let (content_id, token) = (speak.content_id(), speak.token.clone());
                    let Some(feed) = self.attachments.take(&content_id) else {
                        if self.awaiting_answer {
                            // Its attachment follows in the same answer.
                            return;
                        }
                        // From the downchannel: it follows on that stream.
                        let now = tokio::time::Instant::now();
                        let deadline = *self.attachment_due.get_or_insert(now + ATTACHMENT_WAIT);
                        if now < deadline {
                            return;
                        }
                        self.attachment_due = None;
                        let msg = format!("no audio arrived for cid:{content_id}");
                        tracing::warn!("cannot speak: {msg}");
                        if let Some(next) = self.queue.pop_front() {
                            let kind = ExceptionErrorType::UnexpectedInformationReceived;
                            self.report(&next.raw, kind, &msg);
                        }
                        continue;
                    };
                    self.attachment_due = None;
                    let Some(next) = self.queue.pop_front() else {
                        return;
                    };
                    match Speaking::start(&self.speaker, token, feed).await {
                        Ok(s) => self.speaking = Some(s),
                        Err(e) => {
                            let msg = e.to_string();
                            tracing::error!("cannot speak: {msg}");
                            self.set_error(DialogReason::SpeakerFailed, msg.clone());
                            self.report(&next.raw, ExceptionErrorType::InternalError, &msg);
                        }
                    }
                }
                Speech::ExpectSpeech(expect) => {
                    let wait = std::time::Duration::from_millis(expect.timeout_in_milliseconds);
                    tracing::info!(
                        "Alexa expects an answer: listening for speech for up to {wait:?}"
                    );
                    let initiator = expect.initiator.clone();
                    self.queue.pop_front();
                    if self
                        .listen("NEAR_FIELD", initiator, Some(wait), false)
                        .await
                        .is_err()
                    {
                        self.current = None;
                    }
                }
                _ => {
                    self.queue.pop_front();
                }
            }
        }
    }

    pub(super) async fn progress(&mut self, progress: Progress) {
        let Some(speaking) = &mut self.speaking else {
            return;
        };
        match progress {
            Progress::Player(PlayerEvent::Started) => {
                speaking.started = true;
                let token = speaking.token.clone();
                self.speech
                    .send_replace(speaking.state(SpeechActivity::Playing));
                tracing::info!("speaking");
                self.queue_event(Event::speech("SpeechStarted", &token));
            }
            Progress::Player(PlayerEvent::Finished) => {
                let token = speaking.token.clone();
                self.speech
                    .send_replace(speaking.state(SpeechActivity::Finished));
                self.speaking = None;
                self.queue_event(Event::speech("SpeechFinished", &token));
            }
            Progress::Player(PlayerEvent::Failed(e)) => {
                let msg = e.to_string();
                tracing::error!("playing the answer failed: {msg}");
                self.speech
                    .send_replace(speaking.state(SpeechActivity::Finished));
                self.speaking = None;
                self.set_error(DialogReason::SpeakerFailed, msg);
            }
            Progress::Player(PlayerEvent::Stopped) | Progress::Gone => self.speaking = None,
        }
        self.advance().await;
    }
}
