//! The wake word in the dialog: keeping a watcher on the microphone
//! whenever avsd is not listening already (`crate::wakeword`): idle, while
//! music plays, while Alexa thinks and while she speaks, with her own voice
//! and the music taken out of the microphone by the echo canceller
//! (`audio::echo`); and turning its detection into a Recognize with
//! initiator WAKEWORD that streams from 500 ms before the word. A detection
//! while an answer is awaited or spoken barges in, as a Tap does: the
//! answer stops (SpeechInterrupted) and the new request starts.

use tokio_util::sync::CancellationToken;

use super::{Dialog, Note};

/// How long the watcher waits before opening a failed microphone again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);
use crate::dialog::{DialogReason, DialogState};
use crate::wakeword::{WatchEnd, Woken, watch};

impl Dialog {
    /// Start the watcher when it should run and does not, stop it when it
    /// runs and should not (listening, muted, switched off). It keeps
    /// running from idle to thinking to speaking and back: reopening the
    /// microphone would lose the canceller's alignment and the engine's
    /// context at the moments a user is most likely to say "Alexa, stop".
    pub(super) fn keep_watching(&mut self) {
        let engine = self.wake.engine.as_ref().ok();
        let wanted = engine.is_some()
            && self.wake.enabled.is_on()
            && !self.microphone.is_muted()
            && self.derive() != DialogState::Listening;
        match (&self.watching, wanted, engine) {
            (Some(_), false, _) => self.stop_watching(),
            (None, true, Some(engine)) => {
                self.watch_gen += 1;
                let (generation, stop) = (self.watch_gen, CancellationToken::new());
                let (config, engine) = (self.settings.capture.clone(), engine.clone());
                let loud = self.settings.speech_threshold;
                let notes = self.notes.clone();
                let token = stop.clone();
                let slot = self.heard.clone();
                self.tracker.spawn(async move {
                    loop {
                        let mut end =
                            watch(config.clone(), engine.clone(), loud, token.clone()).await;
                        if let WatchEnd::Woken(w) = end {
                            // In the slot, not the note: a Tap that comes
                            // first closes it there, so its own capture
                            // need not wait for this one on the capture thread.
                            *lock(&slot) = Some(w);
                            end = WatchEnd::Heard;
                        }
                        let retry = matches!(end, WatchEnd::Device(_));
                        if notes.send(Note::Watch { generation, end }).await.is_err() || !retry {
                            return;
                        }
                        // A microphone plugged in later (or a driver that
                        // recovers) is picked up without a restart.
                        tokio::select! {
                            _ = token.cancelled() => return,
                            () = tokio::time::sleep(RETRY) => {}
                        }
                    }
                });
                self.watching = Some(stop);
            }
            _ => {}
        }
    }

    /// Close the watcher's microphone (a capture opened after this waits
    /// for it on the capture thread).
    pub(super) fn stop_watching(&mut self) {
        if let Some(stop) = self.watching.take() {
            stop.cancel();
        }
        // A detection not yet handled: its capture closes now.
        drop(lock(&self.heard).take());
    }

    /// Said by `enabled` changing: a broken model is reported when on.
    pub(super) fn wake_switched(&mut self) {
        if self.wake.enabled.is_on()
            && let Err(msg) = &self.wake.engine
        {
            let reason = if self.wake.model.exists() {
                DialogReason::ModelUnusable
            } else {
                DialogReason::ModelMissing
            };
            self.set_error(reason, msg.clone());
        }
    }

    pub(super) async fn watch_ended(&mut self, generation: u64, end: WatchEnd) {
        if generation != self.watch_gen {
            return;
        }
        match end {
            WatchEnd::Stopped => self.watching = None,
            WatchEnd::Device(e) => {
                // The watcher tries again shortly; said once per problem.
                let msg = format!("the wake word cannot listen: {e}");
                if self.status.borrow().last_error != msg {
                    tracing::error!("{msg} (trying again every {RETRY:?})");
                    self.set_error(DialogReason::MicrophoneFailed, msg);
                }
            }
            WatchEnd::Woken(woken) => {
                self.watching = None;
                self.woken(woken).await;
            }
            WatchEnd::Heard => {
                self.watching = None;
                let woken = lock(&self.heard).take();
                if let Some(woken) = woken {
                    self.woken(woken).await;
                }
            }
        }
    }

    async fn woken(&mut self, woken: Woken) {
        let Woken {
            capture,
            preroll,
            detected,
        } = woken;
        let state = self.derive();
        if state == DialogState::Listening || self.microphone.is_muted() {
            capture.close().await;
            return;
        }
        let ready = super::check(
            crate::dialog::Trigger::Tap,
            self.auth.borrow().state,
            *self.link_state.borrow(),
        );
        if let Err(e) = ready {
            tracing::warn!("heard the wake word, but cannot ask Alexa: {e}");
            self.set_error(e.reason(), e.to_string());
            capture.close().await;
            return;
        }
        tracing::info!(
            "wake word heard (score {:.2}, samples {}..{} of the request's audio{})",
            detected.score,
            detected.start,
            detected.end,
            match state {
                DialogState::Speaking => ", barging in on Alexa's answer",
                DialogState::Thinking => ", dropping the awaited answer",
                _ => "",
            }
        );
        if state != DialogState::Idle {
            // Barge-in, as for a Tap: the answer stops, the new request
            // replaces it; music ducks under the new dialog as before.
            self.stop_all();
        }
        let _ = self.wake.detected.send(detected);
        let _ = self
            .router
            .try_send(crate::avs::inbound::Inbound::UserActivity);
        let initiator = serde_json::json!({
            "type": "WAKEWORD",
            "payload": {
                "wakeWordIndices": {
                    "startIndexInSamples": detected.start,
                    "endIndexInSamples": detected.end,
                },
                "wakeWord": "ALEXA",
            }
        });
        let profile = self.wake.profile.clone();
        self.listen_with(capture, preroll, &profile, Some(initiator), None, false);
    }
}

fn lock(slot: &std::sync::Mutex<Option<Woken>>) -> std::sync::MutexGuard<'_, Option<Woken>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}
