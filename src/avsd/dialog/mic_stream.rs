//! The microphone stream: moves 10 ms chunks from the microphone into the
//! audio part of a Recognize as they are captured, until the dialog says
//! stop, the request reaches its length limit, or the device fails. For
//! ExpectSpeech it first waits for the user to start speaking, keeping a
//! short pre-roll so the first syllable is not lost.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Note;
use crate::audio::{AudioError, Capture};
use crate::avs::connection::AudioPart;

/// Chunks of audio that may queue for the upload (5 s): a stalled network
/// holds the microphone back here rather than growing memory.
pub(super) const AUDIO_QUEUE: usize = 500;

/// Chunks kept from before speech starts when waiting for it (300 ms).
const PREROLL_CHUNKS: usize = 30;

/// Consecutive loud chunks that count as the start of speech (30 ms), so a
/// click does not.
const ONSET_CHUNKS: usize = 3;

/// How one listening turn ends, as reported to the dialog actor.
#[derive(Debug)]
pub(super) enum Ended {
    /// Told to stop, or the upload stopped reading (AVS answered).
    Stopped,
    /// Told to drop the request (Stop): it is reset, not completed.
    Aborted,
    /// The length limit was reached.
    TooLong,
    /// ExpectSpeech: nobody spoke within the timeout.
    NoSpeech,
    /// The microphone failed or went away.
    Device(AudioError),
}

/// One listening turn.
pub(super) struct Listen {
    /// The open microphone.
    pub capture: Capture,
    /// Audio captured before the turn began, streamed first (the wake
    /// word's pre-roll); empty for a talk button.
    pub preroll: Vec<Bytes>,
    /// Where the audio part's bytes go.
    pub audio: mpsc::Sender<AudioPart>,
    /// Cancelled by the dialog to end the turn and complete the request.
    pub stop: CancellationToken,
    /// Cancelled by the dialog to end the turn and drop the request.
    pub abort: CancellationToken,
    /// The longest the turn may stream.
    pub max_len: Duration,
    /// ExpectSpeech: wait this long for speech before streaming anything.
    pub wait_for_speech: Option<(Duration, f64)>,
    /// The dialog actor's notes channel.
    pub notes: mpsc::Sender<Note>,
    /// Which turn this is, so late notes of an old turn are ignored.
    pub turn: u64,
}

impl Listen {
    /// Stream until the turn ends, close the device, then tell the dialog.
    pub(super) async fn run(self) {
        let Listen {
            mut capture,
            preroll,
            audio,
            stop,
            abort,
            max_len,
            wait_for_speech,
            notes,
            turn,
        } = self;
        let mut ended = None;
        for chunk in preroll {
            if audio.send(AudioPart::Data(chunk)).await.is_err() {
                ended = Some(Ended::Stopped);
                break;
            }
        }
        let ended = match ended {
            Some(ended) => ended,
            None => {
                stream(
                    &mut capture,
                    &audio,
                    (&stop, &abort),
                    max_len,
                    wait_for_speech,
                    &notes,
                    turn,
                )
                .await
            }
        };
        // A failed device is reported before the audio part ends, so that
        // the dialog drops the request instead of taking AVS's answer to
        // half a sentence; the rest after the device is closed, so that
        // ExpectSpeech can reopen a `hw:` device at once.
        let ended = match ended {
            Ended::Device(e) => {
                let _ = notes
                    .send(Note::ListenEnded {
                        turn,
                        ended: Ended::Device(e),
                    })
                    .await;
                None
            }
            other => Some(other),
        };
        // A request ended on purpose is completed; any other is reset
        // when its sender goes.
        if matches!(ended, Some(Ended::Stopped | Ended::TooLong)) {
            let _ = audio.send(AudioPart::End).await;
        }
        drop(audio);
        let overruns = capture.overruns();
        if overruns > 0 {
            tracing::warn!("the microphone lost audio {overruns} time(s) in this request");
        }
        capture.close().await;
        if let Some(ended) = ended {
            let _ = notes.send(Note::ListenEnded { turn, ended }).await;
        }
    }
}

async fn stream(
    capture: &mut Capture,
    audio: &mpsc::Sender<AudioPart>,
    (stop, abort): (&CancellationToken, &CancellationToken),
    max_len: Duration,
    wait_for_speech: Option<(Duration, f64)>,
    notes: &mpsc::Sender<Note>,
    turn: u64,
) -> Ended {
    let mut waiting = wait_for_speech.map(|(timeout, threshold)| Onset {
        deadline: Instant::now() + timeout,
        threshold,
        loud: 0,
        preroll: VecDeque::with_capacity(PREROLL_CHUNKS),
    });
    let mut deadline = Instant::now() + max_len;
    loop {
        let limit = waiting.as_ref().map_or(deadline, |w| w.deadline);
        let chunk = tokio::select! {
            biased;
            _ = abort.cancelled() => return Ended::Aborted,
            _ = stop.cancelled() => return Ended::Stopped,
            _ = tokio::time::sleep_until(limit) => {
                return if waiting.is_some() { Ended::NoSpeech } else { Ended::TooLong };
            }
            chunk = capture.next_chunk() => chunk,
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Ended::Device(e),
            None => {
                return Ended::Device(AudioError::Thread(
                    "the capture thread ended without an error".into(),
                ));
            }
        };
        if let Some(onset) = &mut waiting {
            if !onset.push(chunk) {
                continue;
            }
            let preroll = std::mem::take(&mut onset.preroll);
            waiting = None;
            deadline = Instant::now() + max_len;
            let _ = notes.send(Note::SpeechDetected { turn }).await;
            for chunk in preroll {
                if audio.send(AudioPart::Data(chunk)).await.is_err() {
                    return Ended::Stopped;
                }
            }
            continue;
        }
        if audio.send(AudioPart::Data(chunk)).await.is_err() {
            return Ended::Stopped;
        }
    }
}

/// Waiting for the user to start speaking.
struct Onset {
    deadline: Instant,
    threshold: f64,
    loud: usize,
    preroll: VecDeque<Bytes>,
}

impl Onset {
    /// Keep the chunk in the pre-roll; true once speech has begun.
    fn push(&mut self, chunk: Bytes) -> bool {
        if rms_s16le(&chunk) >= self.threshold {
            self.loud += 1;
        } else {
            self.loud = 0;
        }
        if self.preroll.len() == PREROLL_CHUNKS {
            self.preroll.pop_front();
        }
        self.preroll.push_back(chunk);
        self.loud >= ONSET_CHUNKS
    }
}

/// Root mean square of 16-bit little-endian samples, on the 16-bit scale.
fn rms_s16le(chunk: &[u8]) -> f64 {
    let n = chunk.len() / 2;
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = chunk
        .chunks_exact(2)
        .map(|s| f64::from(i16::from_le_bytes([s[0], s[1]])).powi(2))
        .sum();
    (sum / n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::AVS_CHUNK_BYTES;

    fn chunk(amplitude: i16) -> Bytes {
        let mut v = Vec::with_capacity(AVS_CHUNK_BYTES);
        for i in 0..AVS_CHUNK_BYTES / 2 {
            let s = if i % 2 == 0 { amplitude } else { -amplitude };
            v.extend_from_slice(&s.to_le_bytes());
        }
        Bytes::from(v)
    }

    #[test]
    fn rms_of_a_square_wave_is_its_amplitude() {
        assert_eq!(rms_s16le(&chunk(1000)), 1000.0);
        assert_eq!(rms_s16le(&chunk(0)), 0.0);
        assert_eq!(rms_s16le(&[]), 0.0);
    }

    #[test]
    fn onset_needs_several_loud_chunks_and_keeps_the_preroll() {
        let mut onset = Onset {
            deadline: Instant::now(),
            threshold: 300.0,
            loud: 0,
            preroll: VecDeque::new(),
        };
        for _ in 0..PREROLL_CHUNKS + 5 {
            assert!(!onset.push(chunk(10)));
        }
        assert_eq!(onset.preroll.len(), PREROLL_CHUNKS);
        // A click: one loud chunk, then quiet again.
        assert!(!onset.push(chunk(5000)));
        assert!(!onset.push(chunk(10)));
        assert!(!onset.push(chunk(5000)));
        assert!(!onset.push(chunk(5000)));
        assert!(onset.push(chunk(5000)));
        assert_eq!(onset.preroll.back().map(|c| rms_s16le(c)), Some(5000.0));
    }
}
