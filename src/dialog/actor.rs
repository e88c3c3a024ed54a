//! The dialog actor: the one owner of a dialog's state. Its loop takes the
//! talk buttons, the directives of the answer, and notes from its own
//! listening task and player, and derives the attention state from what is
//! going on (listening, an answer playing, an answer awaited).

use std::collections::VecDeque;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listen::{AUDIO_QUEUE, Ended, Listen};
use super::speech::{Attachments, Progress, Speaking};
use super::{
    ConnectionState, DialogCommand, DialogError, DialogState, DialogStatus, Links, Settings,
    Trigger, context,
};
use crate::audio::{Capture, PlayerEvent};
use crate::auth::{AuthState, AuthStatus};
use crate::avs::connection::{AudioPart, ConnectionHandle};
use crate::avs::inbound::Inbound;
use crate::avs::message::{
    Directive, Event, ExceptionErrorType, KnownDirective, SpeechActivity, SpeechState,
    new_dialog_request_id,
};

/// The audio format of every Recognize.
const FORMAT: &str = "AUDIO_L16_RATE_16000_CHANNELS_1";

/// Events waiting for the sender task; they go out one by one, in order.
const OUTBOX: usize = 32;

/// What the dialog's own tasks tell it.
#[derive(Debug)]
pub(super) enum Note {
    /// ExpectSpeech heard the user: start the Recognize.
    SpeechDetected {
        /// The listening turn.
        turn: u64,
    },
    /// A listening turn is over and its microphone closed (a failed one is
    /// reported at once, before it is closed).
    ListenEnded {
        /// The listening turn.
        turn: u64,
        /// Why.
        ended: Ended,
    },
}

/// A directive of the current dialog, waiting for its turn.
struct Queued {
    directive: KnownDirective,
    raw: String,
}

/// The microphone is open.
struct Listening {
    turn: u64,
    /// Ends the turn and completes the request.
    stop: CancellationToken,
    /// Ends the turn and resets the request.
    abort: CancellationToken,
    /// Hold: only Release (or Stop) ends it.
    hold: bool,
    /// ExpectSpeech: the Recognize waits for speech to begin.
    pending: Option<(String, mpsc::Receiver<AudioPart>)>,
}

struct Dialog {
    settings: Settings,
    auth: watch::Receiver<AuthStatus>,
    link_state: watch::Receiver<ConnectionState>,
    connection: ConnectionHandle,
    router: mpsc::Sender<Inbound>,
    status: watch::Sender<DialogStatus>,
    speech: watch::Sender<SpeechState>,
    notes: mpsc::Sender<Note>,
    outbox: mpsc::Sender<String>,
    tracker: TaskTracker,
    /// Numbers listening turns, so a late note of an old one is ignored.
    turn: u64,
    /// The dialogRequestId whose directives are taken; others are stale.
    current: Option<String>,
    /// The listening turn that started `current`.
    current_turn: u64,
    listening: Option<Listening>,
    /// The Recognize exchange, aborted (stream reset) by Stop.
    upload: Option<JoinHandle<()>>,
    /// The current Recognize's answer has not ended yet.
    awaiting_answer: bool,
    queue: VecDeque<Queued>,
    attachments: Attachments,
    speaking: Option<Speaking>,
}

pub(super) async fn run(
    settings: Settings,
    links: Links,
    status: watch::Sender<DialogStatus>,
    mut rx: mpsc::Receiver<DialogCommand>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let Links {
        auth,
        connection,
        router,
        mut inbound,
        speech,
    } = links;
    let (notes, mut notes_rx) = mpsc::channel(8);
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
    tracker.spawn(send_events(connection.clone(), outbox_rx, shutdown.clone()));
    let mut d = Dialog {
        settings,
        auth,
        link_state: connection.state(),
        connection,
        router,
        status,
        speech,
        notes,
        outbox,
        tracker,
        turn: 0,
        current: None,
        current_turn: 0,
        listening: None,
        upload: None,
        awaiting_answer: false,
        queue: VecDeque::new(),
        attachments: Attachments::default(),
        speaking: None,
    };
    loop {
        let speaking = async {
            match &mut d.speaking {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(DialogCommand::Trigger(trigger, reply)) => {
                    let result = d.trigger(trigger).await;
                    let _ = reply.send(result);
                }
                Some(DialogCommand::Ping(reply)) => {
                    let _ = reply.send(());
                }
                None => break,
            },
            item = inbound.recv() => match item {
                Some(item) => d.inbound(item).await,
                None => break,
            },
            Some(note) = notes_rx.recv() => d.note(note).await,
            progress = speaking => d.progress(progress).await,
        }
        d.publish();
    }
    d.stop_all();
}

impl Dialog {
    async fn trigger(&mut self, trigger: Trigger) -> Result<(), DialogError> {
        match trigger {
            Trigger::Stop => {
                if self.derive() != DialogState::Idle {
                    tracing::info!("Stop: ending the dialog");
                }
                self.stop_all();
                Ok(())
            }
            Trigger::Release => {
                if let Some(l) = self.listening.take_if(|l| l.hold) {
                    tracing::info!("Release: closing the microphone");
                    l.stop.cancel();
                    return Ok(());
                }
                // Nothing held: say why no Hold could be, else nothing to do.
                check(trigger, self.auth.borrow().state, *self.link_state.borrow())
            }
            Trigger::Tap | Trigger::Hold => {
                check(trigger, self.auth.borrow().state, *self.link_state.borrow())?;
                match self.derive() {
                    DialogState::Listening => {
                        return Err(DialogError::Busy(
                            "avsd is already listening; call Stop first (or Release after Hold)"
                                .into(),
                        ));
                    }
                    DialogState::Thinking => {
                        return Err(DialogError::Busy(
                            "avsd is waiting for Alexa's answer; call Stop first to drop it".into(),
                        ));
                    }
                    // Barge-in: the new request replaces the answer.
                    DialogState::Speaking => self.stop_all(),
                    DialogState::Idle => {}
                }
                let (profile, initiator) = match trigger {
                    Trigger::Hold => ("CLOSE_TALK", "PRESS_AND_HOLD"),
                    _ => ("NEAR_FIELD", "TAP"),
                };
                let initiator = serde_json::json!({ "type": initiator });
                self.listen(profile, Some(initiator), None, trigger == Trigger::Hold)
                    .await
                    .map_err(DialogError::Audio)
            }
        }
    }

    /// Open the microphone and start a Recognize (at once, or once speech
    /// begins when `wait` is set, for ExpectSpeech).
    async fn listen(
        &mut self,
        profile: &str,
        initiator: Option<serde_json::Value>,
        wait: Option<std::time::Duration>,
        hold: bool,
    ) -> Result<(), String> {
        let capture = match Capture::start(self.settings.capture.clone()).await {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("cannot listen: {msg}");
                self.set_error(msg.clone());
                return Err(msg);
            }
        };
        self.set_error(String::new());
        self.turn += 1;
        let id = new_dialog_request_id();
        let speech = self.speech.borrow().clone();
        let event = Event::recognize(&id, profile, FORMAT, initiator, context(&speech));
        let (audio, audio_rx) = mpsc::channel(AUDIO_QUEUE);
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let mut pending = Some((event.to_json(), audio_rx));
        self.current = Some(id.clone());
        self.current_turn = self.turn;
        if wait.is_none() {
            self.start_upload(&mut pending);
        }
        tracing::info!(
            "listening ({profile}, dialog {id}, microphone {})",
            capture.device_format()
        );
        self.tracker.spawn(
            Listen {
                capture,
                audio,
                stop: stop.clone(),
                abort: abort.clone(),
                max_len: self.settings.max_listen,
                wait_for_speech: wait.map(|w| (w, self.settings.speech_threshold)),
                notes: self.notes.clone(),
                turn: self.turn,
            }
            .run(),
        );
        self.listening = Some(Listening {
            turn: self.turn,
            stop,
            abort,
            hold,
            pending,
        });
        Ok(())
    }

    fn start_upload(&mut self, pending: &mut Option<(String, mpsc::Receiver<AudioPart>)>) {
        let (Some((metadata, audio)), Some(id)) = (pending.take(), self.current.clone()) else {
            return;
        };
        let connection = self.connection.clone();
        let router = self.router.clone();
        self.awaiting_answer = true;
        self.upload = Some(tokio::spawn(async move {
            let outcome = connection
                .send(metadata, Some(audio))
                .await
                .map(|_| ())
                .map_err(|e| format!("Alexa did not answer the request: {e}"));
            let _ = router
                .send(Inbound::Answered {
                    dialog_request_id: id,
                    outcome,
                })
                .await;
        }));
    }

    async fn inbound(&mut self, item: Inbound) {
        match item {
            Inbound::Directive { directive, raw } => self.directive(directive, raw).await,
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
                if let Err(msg) = outcome {
                    tracing::warn!("{msg}");
                    self.set_error(msg);
                    if let Some(l) = self.listening.take() {
                        l.abort.cancel();
                    }
                }
                self.advance().await;
            }
            Inbound::Malformed { .. } => {}
        }
    }

    async fn directive(&mut self, directive: Directive, raw: String) {
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
        let Ok(known) = directive.known() else {
            return;
        };
        match known {
            KnownDirective::StopCapture => {
                if let Some(l) = self.listening.take_if(|l| !l.hold && l.pending.is_none()) {
                    tracing::info!("StopCapture: closing the microphone");
                    l.stop.cancel();
                }
            }
            directive @ (KnownDirective::Speak(_) | KnownDirective::ExpectSpeech(_)) => {
                self.queue.push_back(Queued { directive, raw });
                self.advance().await;
            }
            _ => {}
        }
    }

    /// Run the next queued directive if nothing else is going on.
    async fn advance(&mut self) {
        while self.listening.is_none() && self.speaking.is_none() {
            let Some(next) = self.queue.front() else {
                return;
            };
            match &next.directive {
                KnownDirective::Speak(speak) => {
                    let (content_id, token) = (speak.content_id(), speak.token.clone());
                    let Some(feed) = self.attachments.take(&content_id) else {
                        if self.awaiting_answer {
                            // Its attachment follows in the same answer.
                            return;
                        }
                        let msg = format!("no audio arrived for cid:{content_id}");
                        tracing::warn!("cannot speak: {msg}");
                        if let Some(next) = self.queue.pop_front() {
                            let kind = ExceptionErrorType::UnexpectedInformationReceived;
                            self.report(&next.raw, kind, &msg);
                        }
                        continue;
                    };
                    let Some(next) = self.queue.pop_front() else {
                        return;
                    };
                    match Speaking::start(self.settings.playback.clone(), token, feed).await {
                        Ok(s) => self.speaking = Some(s),
                        Err(e) => {
                            let msg = e.to_string();
                            tracing::error!("cannot speak: {msg}");
                            self.set_error(msg.clone());
                            self.report(&next.raw, ExceptionErrorType::InternalError, &msg);
                        }
                    }
                }
                KnownDirective::ExpectSpeech(expect) => {
                    let wait = std::time::Duration::from_millis(expect.timeout_in_milliseconds);
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

    async fn note(&mut self, note: Note) {
        match note {
            Note::SpeechDetected { turn } => {
                if let Some(l) = self.listening.as_mut().filter(|l| l.turn == turn) {
                    tracing::info!("speech detected: sending it to Alexa");
                    let mut pending = l.pending.take();
                    self.start_upload(&mut pending);
                }
            }
            Note::ListenEnded { turn, ended } => {
                let mine = self.listening.as_ref().is_some_and(|l| l.turn == turn);
                if mine {
                    self.listening = None;
                }
                // StopCapture may have ended the turn first (the audio ended
                // because the device failed): the dialog still counts.
                let current = self.current.is_some() && self.current_turn == turn;
                match ended {
                    Ended::Stopped | Ended::Aborted => {}
                    Ended::TooLong => tracing::info!(
                        "the request reached {:?} (audio.max_listen_secs); closing the microphone",
                        self.settings.max_listen
                    ),
                    Ended::NoSpeech if mine => {
                        tracing::info!("nobody spoke after ExpectSpeech");
                        self.current = None;
                        self.queue_event(Event::expect_speech_timed_out());
                    }
                    Ended::NoSpeech => {}
                    Ended::Device(e) if current => {
                        let msg = e.to_string();
                        tracing::error!("the microphone failed: {msg}");
                        self.stop_all();
                        self.set_error(msg);
                    }
                    Ended::Device(_) => {}
                }
                self.advance().await;
            }
        }
    }

    async fn progress(&mut self, progress: Progress) {
        let Some(speaking) = &mut self.speaking else {
            return;
        };
        match progress {
            Progress::Fed => return,
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
                self.set_error(msg);
            }
            Progress::Player(PlayerEvent::Stopped) | Progress::Gone => self.speaking = None,
        }
        self.advance().await;
    }

    /// End whatever is going on: close the microphone and reset the
    /// Recognize stream, silence the answer, forget queued directives.
    fn stop_all(&mut self) {
        if let Some(l) = self.listening.take() {
            l.abort.cancel();
        }
        if let Some(upload) = self.upload.take() {
            upload.abort();
        }
        if let Some(mut s) = self.speaking.take() {
            s.stop();
            if s.started {
                self.speech
                    .send_replace(s.state(SpeechActivity::Interrupted));
                self.queue_event(Event::speech("SpeechInterrupted", &s.token));
            }
        }
        self.current = None;
        self.awaiting_answer = false;
        self.queue.clear();
        self.attachments.clear();
    }

    fn derive(&self) -> DialogState {
        if self.listening.is_some() {
            DialogState::Listening
        } else if self.speaking.as_ref().is_some_and(|s| s.started) {
            DialogState::Speaking
        } else if self.awaiting_answer || self.speaking.is_some() || !self.queue.is_empty() {
            DialogState::Thinking
        } else {
            DialogState::Idle
        }
    }

    fn publish(&self) {
        let state = self.derive();
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            if changed {
                tracing::debug!("dialog {} -> {}", s.state.as_str(), state.as_str());
            }
            s.state = state;
            changed
        });
    }

    fn set_error(&self, msg: String) {
        self.status.send_if_modified(|s| {
            let changed = s.last_error != msg;
            s.last_error = msg;
            changed
        });
    }

    fn report(&self, raw: &str, kind: ExceptionErrorType, msg: &str) {
        let speech = self.speech.borrow().clone();
        self.queue_event(Event::exception_encountered(
            raw,
            kind,
            msg,
            context(&speech),
        ));
    }

    fn queue_event(&self, event: Event) {
        if self.outbox.try_send(event.to_json()).is_err() {
            tracing::warn!(
                "too many events waiting for AVS; dropped {}",
                event.header().name
            );
        }
    }
}

/// Send the dialog's events one at a time, so SpeechStarted always reaches
/// AVS before its SpeechFinished.
async fn send_events(
    connection: ConnectionHandle,
    mut rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let metadata = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if let Err(e) = connection.send(metadata, None).await {
            tracing::warn!("cannot send a speech event to AVS: {e}");
        }
    }
}

/// Whether a talk trigger can act now.
fn check(
    trigger: Trigger,
    auth: AuthState,
    connection: ConnectionState,
) -> Result<(), DialogError> {
    if trigger == Trigger::Stop {
        return Ok(());
    }
    if auth != AuthState::Authorized {
        return Err(DialogError::NotAuthorized(
            "avsd is not authorized with Amazon yet: run `avsctl login` and finish the login \
             in a browser"
                .to_string(),
        ));
    }
    if connection != ConnectionState::Connected {
        return Err(DialogError::NotConnected(
            "avsd is not connected to Alexa yet; watch Dialog.Connection and try again once it \
             reads `connected`"
                .to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talk_needs_authorization_first_then_a_connection() {
        let down = ConnectionState::Disconnected;
        for t in [Trigger::Tap, Trigger::Hold, Trigger::Release] {
            let unauthorized = check(t, AuthState::Unregistered, down);
            assert!(matches!(unauthorized, Err(DialogError::NotAuthorized(_))));
            let offline = check(t, AuthState::Authorized, down);
            assert!(matches!(offline, Err(DialogError::NotConnected(_))));
            let up = check(t, AuthState::Authorized, ConnectionState::Connected);
            assert_eq!(up, Ok(()));
        }
        assert_eq!(check(Trigger::Stop, AuthState::Unregistered, down), Ok(()));
    }
}
