//! Listening turns: opening the microphone, starting the Recognize (at
//! once, or once ExpectSpeech hears the user), and what the listening task
//! reports back.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Dialog, Listening, Note};
use crate::audio::Capture;
use crate::avs::connection::{AudioPart, SendError};
use crate::avs::inbound::Inbound;
use crate::dialog::DialogReason;
use crate::dialog::mic_stream::{AUDIO_QUEUE, Ended, Listen};
use avs_proto::message::{Event, new_dialog_request_id};

/// The audio format of every Recognize.
const FORMAT: &str = "AUDIO_L16_RATE_16000_CHANNELS_1";

impl Dialog {
    /// Open the microphone and start a Recognize (at once, or once speech
    /// begins when `wait` is set, for ExpectSpeech).
    pub(super) async fn listen(
        &mut self,
        profile: &str,
        initiator: Option<serde_json::Value>,
        wait: Option<std::time::Duration>,
        hold: bool,
    ) -> Result<(), String> {
        if self.microphone.is_muted() {
            tracing::info!("not listening: the microphone is muted");
            if wait.is_some() {
                // ExpectSpeech while muted: nobody can answer, as AVS
                // learns from the timeout it would otherwise wait for.
                self.queue_event(Event::expect_speech_timed_out());
            }
            self.set_error(DialogReason::MicrophoneMuted, super::MUTED.into());
            return Err(super::MUTED.into());
        }
        // Its microphone closes before this one opens (the capture thread
        // runs one device at a time).
        self.stop_watching();
        let capture = match Capture::start(self.settings.capture.clone()).await {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("cannot listen: {msg}");
                self.set_error(DialogReason::MicrophoneFailed, msg.clone());
                return Err(msg);
            }
        };
        self.listen_with(capture, Vec::new(), profile, initiator, wait, hold);
        Ok(())
    }

    /// Start a Recognize on an open microphone whose first audio is
    /// `preroll` (the wake word's, or none).
    pub(super) fn listen_with(
        &mut self,
        capture: Capture,
        preroll: Vec<bytes::Bytes>,
        profile: &str,
        initiator: Option<serde_json::Value>,
        wait: Option<std::time::Duration>,
        hold: bool,
    ) {
        self.set_error(DialogReason::None, String::new());
        self.turn += 1;
        let id = new_dialog_request_id();
        let event = Event::recognize(&id, profile, FORMAT, initiator, (self.context)());
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
                preroll,
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
    }

    pub(super) fn start_upload(
        &mut self,
        pending: &mut Option<(String, mpsc::Receiver<AudioPart>)>,
    ) {
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
                .map_err(|e| {
                    let reason = match e {
                        SendError::Forbidden(_) => DialogReason::TokenRefused,
                        SendError::NotConnected => DialogReason::NotConnected,
                        SendError::NotAuthorized(_) => DialogReason::NotAuthorized,
                        SendError::Status { .. } | SendError::Stream(_) => {
                            DialogReason::AnswerFailed
                        }
                    };
                    (reason, format!("Alexa did not answer the request: {e}"))
                });
            let _ = router
                .send(Inbound::Answered {
                    dialog_request_id: id,
                    outcome,
                })
                .await;
        }));
    }

    pub(super) async fn note(&mut self, note: Note) {
        match note {
            Note::SpeechDetected { turn } => {
                if let Some(l) = self.listening.as_mut().filter(|l| l.turn == turn) {
                    tracing::info!("speech detected: sending it to Alexa");
                    let mut pending = l.pending.take();
                    self.start_upload(&mut pending);
                }
            }
            Note::Watch { generation, end } => self.watch_ended(generation, end).await,
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
                        self.set_error(DialogReason::MicrophoneFailed, msg);
                    }
                    Ended::Device(_) => {}
                }
                self.advance().await;
            }
        }
    }
}
