//! The wake word in the dialog: keeping a watcher on the microphone while
//! idle (`crate::wakeword`), and turning its detection into a Recognize
//! with initiator WAKEWORD that streams from 500 ms before the word.

use tokio_util::sync::CancellationToken;

use super::{Dialog, Note};
use crate::dialog::DialogState;
use crate::wakeword::{WatchEnd, Woken, watch};

impl Dialog {
    /// Start the watcher when it should run and does not, stop it when it
    /// runs and should not (listening, muted, switched off).
    pub(super) fn keep_watching(&mut self) {
        let engine = self.wake.engine.as_ref().ok();
        let wanted = engine.is_some()
            && self.wake.enabled.is_on()
            && !self.microphone.is_muted()
            && !self.watch_broken
            && self.derive() == DialogState::Idle;
        match (&self.watching, wanted, engine) {
            (Some(_), false, _) => self.stop_watching(),
            (None, true, Some(engine)) => {
                self.watch_gen += 1;
                let (generation, stop) = (self.watch_gen, CancellationToken::new());
                let task = watch(
                    self.settings.capture.clone(),
                    engine.clone(),
                    self.settings.speech_threshold,
                    stop.clone(),
                );
                let notes = self.notes.clone();
                self.tracker.spawn(async move {
                    let end = task.await;
                    let _ = notes.send(Note::Watch { generation, end }).await;
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
    }

    /// Said by `enabled` turning on: a broken model or device gets a new try.
    pub(super) fn wake_switched(&mut self) {
        self.watch_broken = false;
        if self.wake.enabled.is_on()
            && let Err(msg) = &self.wake.engine
        {
            self.set_error(msg.clone());
        }
    }

    pub(super) async fn watch_ended(&mut self, generation: u64, end: WatchEnd) {
        if generation != self.watch_gen {
            return;
        }
        self.watching = None;
        match end {
            WatchEnd::Stopped => {}
            WatchEnd::Device(e) => {
                let msg = format!("the wake word cannot listen: {e}");
                tracing::error!("{msg}");
                self.set_error(msg);
                // Retried when the switch or the microphone is turned on
                // again, or after the next dialog: not in a tight loop.
                self.watch_broken = true;
            }
            WatchEnd::Woken(woken) => self.woken(woken).await,
        }
    }

    async fn woken(&mut self, woken: Woken) {
        let Woken {
            capture,
            preroll,
            detected,
        } = woken;
        if self.derive() != DialogState::Idle || self.microphone.is_muted() {
            capture.close().await;
            return;
        }
        tracing::info!(
            "wake word heard (score {:.2}, samples {}..{} of the request's audio)",
            detected.score,
            detected.start,
            detected.end
        );
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
