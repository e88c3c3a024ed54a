//! The dialog actor: the one owner of a dialog's state. Its loop takes the
//! talk buttons, the directives of the answer, and notes from its own
//! listening task and player, and derives the attention state from what is
//! going on (listening, an answer playing, an answer awaited).

mod answer;
mod listening;
mod woken;

use std::collections::VecDeque;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::mic_stream::Ended;
use super::speech::{Attachments, Speaking};
use super::{
    DialogCommand, DialogError, DialogReason, DialogState, DialogStatus, Input, Links, Settings,
    Speech, Trigger,
};
use crate::audio::{AudioError, Speaker};
use crate::auth::{AuthState, AuthStatus};
use crate::avs::connection::{AudioPart, ConnectionHandle, ConnectionState, ContextSource};
use crate::avs::inbound::Inbound;
use avs_proto::message::{Event, ExceptionErrorType, SpeechActivity, SpeechState};
use kit::published::{Publisher, Subscriber};

/// Why Tap and Hold are refused while muted.
const MUTED: &str = "the microphone is muted (privacy switch); run `avsctl mic on` or set \
                     org.avsd.Avs1.Microphone.Muted to false first";

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
    /// The wake-word watcher ended (heard the word, stopped, or failed).
    Watch {
        /// Which watch, so an old one's end is ignored.
        generation: u64,
        /// How.
        end: crate::wakeword::WatchEnd,
    },
}

/// A directive of the current dialog, waiting for its turn.
struct Queued {
    directive: Speech,
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
    auth: Subscriber<AuthStatus>,
    link_state: Subscriber<ConnectionState>,
    connection: ConnectionHandle,
    router: mpsc::Sender<Inbound>,
    status: Publisher<DialogStatus>,
    speech: watch::Sender<SpeechState>,
    /// The device's context, from the registered agents.
    context: ContextSource,
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
    /// Speech directives dropped because the queue was full, not yet
    /// reported in the log.
    dropped: u64,
    attachments: Attachments,
    /// A Speak from the downchannel waits for its attachment until then.
    attachment_due: Option<tokio::time::Instant>,
    speaking: Option<Speaking>,
    /// The one output, kept for the daemon's life.
    speaker: Result<Speaker, AudioError>,
    /// The Dialog focus channel, held from listening until idle again, so
    /// music ducks (or pauses) under the whole exchange.
    focus: Option<crate::audio::FocusHold>,
    /// The microphone privacy switch.
    microphone: crate::audio::MicSwitch,
    /// The wake word: engine, switch, profile.
    wake: crate::wakeword::Wake,
    /// Stops the running wake-word watcher.
    watching: Option<CancellationToken>,
    /// Numbers watches.
    watch_gen: u64,
    /// A detection waiting for the dialog (see `woken`).
    heard: std::sync::Arc<std::sync::Mutex<Option<crate::wakeword::Woken>>>,
}

pub(super) async fn run(
    settings: Settings,
    links: Links,
    status: Publisher<DialogStatus>,
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
        context,
        speaker,
        microphone,
        wake,
    } = links;
    let mut muted = microphone.state();
    let mut wake_on = wake.enabled.state();
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
        context,
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
        dropped: 0,
        attachments: Attachments::default(),
        attachment_due: None,
        speaking: None,
        speaker,
        focus: None,
        microphone,
        wake,
        watching: None,
        watch_gen: 0,
        heard: Default::default(),
    };
    d.wake_switched();
    d.keep_watching();
    loop {
        let speaking = async {
            match &mut d.speaking {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        let attachment_due = async {
            match d.attachment_due {
                Some(t) => tokio::time::sleep_until(t).await,
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
                Some(Input::Directive(directive)) => d.directive(directive).await,
                Some(Input::Inbound(item)) => d.inbound(item).await,
                None => break,
            },
            Some(note) = notes_rx.recv() => d.note(note).await,
            progress = speaking => d.progress(progress).await,
            () = attachment_due => d.advance().await,
            Ok(()) = muted.changed() => {
                let now = *muted.borrow_and_update();
                if now && d.listening.is_some() {
                    tracing::info!("microphone muted: ending the request and closing the device");
                    d.stop_all();
                }
            }
            Ok(()) = wake_on.changed() => {
                wake_on.borrow_and_update();
                d.wake_switched();
            }
        }
        d.publish();
        d.hold_focus();
        d.keep_watching();
    }
    d.stop_watching();
    d.stop_all();
}

impl Dialog {
    async fn trigger(&mut self, trigger: Trigger) -> Result<(), DialogError> {
        // A full queue means the router is busy with a burst; this note
        // may then go, but waiting for room could deadlock the two actors.
        let _ = self.router.try_send(Inbound::UserActivity);
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
                if self.microphone.is_muted() {
                    // Said on the Dialog too: the app showing the dialog
                    // may not be the one whose button was refused.
                    self.set_error(DialogReason::MicrophoneMuted, MUTED.into());
                    return Err(DialogError::MicrophoneMuted(MUTED.into()));
                }
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
        self.attachment_due = None;
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

    /// Holds the Dialog channel while the dialog is not idle.
    fn hold_focus(&mut self) {
        let busy = self.derive() != DialogState::Idle;
        if busy && self.focus.is_none() {
            self.focus = self
                .speaker
                .as_ref()
                .ok()
                .map(|s| s.hold(crate::audio::Activity::LISTENING));
        } else if !busy {
            self.focus = None;
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

    /// Set LastError and its reason together (none for an empty one).
    fn set_error(&self, reason: DialogReason, msg: String) {
        let reason = if msg.is_empty() {
            DialogReason::None
        } else {
            reason
        };
        self.status.send_if_modified(|s| {
            let changed = s.last_error != msg || s.last_error_reason != reason;
            s.last_error = msg;
            s.last_error_reason = reason;
            changed
        });
    }

    fn report(&self, raw: &str, kind: ExceptionErrorType, msg: &str) {
        self.queue_event(Event::exception_encountered(
            raw,
            kind,
            msg,
            (self.context)(),
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
