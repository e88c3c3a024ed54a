//! The stand-in's side of a spoken dialog (issue 7): a `Recognize` streams
//! 16 kHz 16-bit mono PCM; the cloud decides when to stop listening
//! (NEAR_FIELD/FAR_FIELD: `StopCapture` after a delay, at the end of speech
//! or when the audio ends; CLOSE_TALK: the client ends the audio and gets no
//! StopCapture), then answers with a `Speak` and its MP3, and on request an
//! `ExpectSpeech`, all on the Recognize's own response stream.
//!
//! The response headers go out with the first directive, as late as
//! possible, so audio that turns out to be unusable can still be refused
//! with a status: an odd byte count (not 16-bit) gets 400; silence (the
//! loudest 100 ms below `silence_rms`) gets no Speak — 204 for CLOSE_TALK,
//! 200 with only the StopCapture otherwise.

use std::sync::Arc;

use bytes::Bytes;
use h2::SendStream;
use h2::server::SendResponse;
use http::Response;
use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use super::EVENTS_PATH;
use super::audio::Audio;
use super::events::{BodyError, BodyReader, check_audio_part, set_status};
use super::related::Related;
use super::rules::{Metadata, Refusal};
use super::server::Ctx;
use super::state::{DialogSettings, RecognizeRecord};
use avs_proto::multipart::Piece;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An answer under way: the 200 is out, parts follow.
struct Answer {
    out: SendStream<Bytes>,
    related: Related,
}

impl Answer {
    fn open(respond: &mut SendResponse<Bytes>) -> Option<Self> {
        let related = Related::new();
        let head = Response::builder()
            .status(200)
            .header("content-type", related.content_type())
            .body(())
            .unwrap_or_default();
        let mut out = respond.send_response(head, false).ok()?;
        out.send_data(related.open(), false).ok()?;
        Some(Self { out, related })
    }

    /// Write a part; a client that went away is not an error here.
    fn send(&mut self, part: Bytes) {
        let _ = self.out.send_data(part, false);
    }

    /// Send one directive; the whole object as sent.
    fn directive(&mut self, namespace: &str, name: &str, dialog: &str, payload: Value) -> Value {
        let d = json!({"directive": {
            "header": {
                "namespace": namespace,
                "name": name,
                "messageId": uuid::Uuid::new_v4().to_string(),
                "dialogRequestId": dialog,
            },
            "payload": payload,
        }});
        let part = self.related.json(d.to_string().as_bytes());
        self.send(part);
        d
    }

    fn stop_capture(&mut self, dialog: &str) {
        let _ = self.directive("SpeechRecognizer", "StopCapture", dialog, json!({}));
    }

    fn close(mut self) {
        let _ = self.out.send_data(self.related.close(), true);
    }
}

/// How listening to a Recognize ended.
enum Heard {
    /// The body is complete (or the client kept streaming past the grace
    /// after StopCapture).
    Complete,
    /// The stream broke (the client reset it, e.g. on Stop) or broke the
    /// rules after the answer began: nothing more can be said on it.
    Failed(String),
    /// Refused before any answer: the status says why.
    Refused(Refusal),
}

/// One Recognize being answered.
struct Turn {
    ctx: Arc<Ctx>,
    respond: SendResponse<Bytes>,
    settings: DialogSettings,
    dialog: String,
    /// NEAR_FIELD/FAR_FIELD: the cloud ends the capture (StopCapture).
    cloud_ends: bool,
    audio: Audio,
    answer: Option<Answer>,
    rec: RecognizeRecord,
}

/// Handle a Recognize whose metadata was accepted; the body is at the
/// start of its second part. `index` is its place in the event list.
pub(super) async fn recognize(
    mut reader: BodyReader,
    respond: SendResponse<Bytes>,
    ctx: Arc<Ctx>,
    meta: Metadata,
    started: Instant,
    index: usize,
) {
    let settings = ctx.shared.dialog();
    let dialog = meta.dialog_request_id.clone().unwrap_or_default();
    let profile = meta.payload["profile"].as_str().unwrap_or("").to_string();
    let mut turn = Turn {
        ctx: ctx.clone(),
        respond,
        audio: Audio::new(settings.silence_rms),
        settings,
        cloud_ends: profile != "CLOSE_TALK",
        answer: None,
        rec: RecognizeRecord {
            connection: ctx.id,
            dialog_request_id: dialog.clone(),
            profile,
            initiator: meta
                .payload
                .get("initiator")
                .cloned()
                .unwrap_or(Value::Null),
            ..RecognizeRecord::default()
        },
        dialog,
    };
    let heard = match turn.listen(&mut reader).await {
        Heard::Complete => {
            let (init, profile) = (&turn.rec.initiator, turn.rec.profile.as_str());
            match super::wakeword::check_inside(init, profile, turn.audio.bytes) {
                Ok(()) => Heard::Complete,
                Err(r) if turn.answer.is_none() => Heard::Refused(r),
                Err(r) => Heard::Failed(r.description),
            }
        }
        other => other,
    };
    let status = match heard {
        Heard::Refused(r) => {
            set_status(&ctx, index, r.status);
            ctx.refuse(&mut turn.respond, EVENTS_PATH, &r);
            return reader.drain();
        }
        Heard::Failed(why) => turn.failed(why),
        Heard::Complete => {
            // Time for a fault to strike between the end of the question
            // and the answer, as on a slow day at the cloud.
            tokio::time::sleep(turn.settings.think).await;
            turn.finish()
        }
    };
    let mut rec = turn.rec;
    let audio = &mut turn.audio;
    rec.audio_bytes = audio.bytes;
    rec.first_audio_ms = audio.first_at.map(|f| ms(f - started));
    rec.stream_ms = match (audio.first_at, audio.last_at) {
        (Some(f), Some(l)) => ms(l - f),
        _ => 0.0,
    };
    rec.audio_ms = audio.bytes as f64 / 32.0;
    rec.peak_rms = (audio.peak_rms * 10.0).round() / 10.0;
    tracing::info!(
        conn = ctx.id,
        status,
        outcome = rec.outcome,
        audio_bytes = rec.audio_bytes,
        "Recognize answered"
    );
    // The status first: whoever waits for the recognize record then sees
    // the event answered too.
    set_status(&ctx, index, status);
    // The audio is kept under the same update, so a test woken by the new
    // record can fetch it at once.
    let pcm = std::mem::take(&mut audio.pcm).freeze();
    ctx.shared.update(|s| {
        ctx.shared.keep_audio(s.recognizes.len(), pcm);
        s.recognizes.push(rec);
    });
    // A client still uploading after the answer (it missed StopCapture)
    // may finish in peace rather than meet a reset stream.
    reader.drain();
}

impl Turn {
    /// Read the audio part to the end of the body, sending StopCapture
    /// when the cloud would.
    async fn listen(&mut self, reader: &mut BodyReader) -> Heard {
        match reader.next().await {
            Ok(Piece::PartStart(h)) => {
                if let Err(r) = check_audio_part(&h, 0) {
                    return Heard::Refused(r);
                }
            }
            Ok(_) => {
                return Heard::Refused(Refusal::invalid("a Recognize must carry an `audio` part"));
            }
            Err(e @ BodyError::Multipart(_)) => return Heard::Refused(e.refusal()),
            // A reset stream is not refused (nobody would hear it) but
            // recorded as a failed Recognize.
            Err(e) => return Heard::Failed(e.to_string()),
        }
        let mut stop_at: Option<Instant> = None;
        let mut grace_until: Option<Instant> = None;
        let mut audio_ended = false;
        loop {
            let stop_pending = self.cloud_ends && self.answer.is_none();
            tokio::select! {
                ev = reader.next() => match ev {
                    Ok(Piece::Data(b)) if !audio_ended => {
                        let first = self.audio.first_at.is_none();
                        let now = Instant::now();
                        let eos = self.audio.push(&b, now, self.settings.end_of_speech);
                        if first {
                            stop_at = Some(now + self.settings.stop_capture);
                        }
                        if eos && stop_pending {
                            stop_at = Some(now);
                        }
                    }
                    Ok(Piece::Data(_)) => {}
                    Ok(Piece::PartEnd) => audio_ended = true,
                    Ok(Piece::PartStart(h)) => {
                        let r = check_audio_part(&h, 1)
                            .err()
                            .unwrap_or_else(|| Refusal::invalid("more than one `audio` part"));
                        return match self.answer {
                            None => Heard::Refused(r),
                            Some(_) => Heard::Failed(r.description),
                        };
                    }
                    Ok(Piece::End) => {
                        self.rec.upload_end_ms = self.audio.first_at.map(|f| ms(Instant::now() - f));
                        return Heard::Complete;
                    }
                    Err(e @ BodyError::Multipart(_)) if self.answer.is_none() => {
                        return Heard::Refused(e.refusal());
                    }
                    Err(e) => return Heard::Failed(e.to_string()),
                },
                _ = sleep_until_opt(stop_at), if stop_pending => {
                    self.stop_capture();
                    grace_until = Some(Instant::now() + self.settings.close_grace);
                }
                // The client kept streaming after StopCapture: answer anyway.
                _ = sleep_until_opt(grace_until) => return Heard::Complete,
            }
        }
    }

    /// Open the answer with a StopCapture.
    fn stop_capture(&mut self) {
        self.answer = Answer::open(&mut self.respond);
        if let Some(a) = &mut self.answer
            && may_direct(&self.ctx, "SpeechRecognizer", "StopCapture")
        {
            a.stop_capture(&self.dialog);
        }
        self.rec.stop_capture_ms = self.audio.first_at.map(|f| ms(Instant::now() - f));
        tracing::info!(conn = self.ctx.id, "StopCapture sent");
    }

    /// Close what was begun after a failure; the status sent (0: none).
    fn failed(&mut self, why: String) -> u16 {
        self.rec.outcome = format!("failed: {why}");
        match self.answer.take() {
            Some(a) => {
                a.close();
                200
            }
            None => 0,
        }
    }

    /// Answer a complete Recognize according to its audio; the status.
    fn finish(&mut self) -> u16 {
        let verdict = self.audio.verdict();
        match (self.answer.is_some(), verdict) {
            (false, Err(why)) => {
                self.rec.outcome = format!("bad audio: {why}");
                let r = Refusal::invalid(format!("bad Recognize audio: {why}"));
                self.ctx.refuse(&mut self.respond, EVENTS_PATH, &r);
                400
            }
            (false, Ok(false)) if !self.cloud_ends => {
                self.rec.outcome = "silence".into();
                let resp = Response::builder().status(204).body(()).unwrap_or_default();
                let _ = self.respond.send_response(resp, true);
                204
            }
            (started, verdict) => {
                if !started {
                    if self.cloud_ends {
                        // The audio ended before the StopCapture deadline:
                        // the cloud heard the end of it.
                        self.stop_capture();
                    } else {
                        self.answer = Answer::open(&mut self.respond);
                    }
                }
                self.rec.outcome = match verdict {
                    Ok(true) => "speak".into(),
                    Ok(false) => "silence".into(),
                    Err(why) => format!("bad audio: {why}"),
                };
                if self.rec.outcome == "speak"
                    && !may_direct(&self.ctx, "SpeechSynthesizer", "Speak")
                {
                    self.rec.outcome = "no speak: SpeechSynthesizer was not declared".into();
                }
                if let Some(mut a) = self.answer.take() {
                    if self.rec.outcome == "speak" {
                        self.rec.expect_speech = speak(&mut a, &self.ctx, &self.dialog);
                    }
                    a.close();
                }
                200
            }
        }
    }
}

/// Whether the answer may carry a directive of `namespace`: AVS sends a
/// device only directives of interfaces it declared.
fn may_direct(ctx: &Ctx, namespace: &str, name: &str) -> bool {
    let ok = ctx.may_direct(namespace);
    if !ok {
        tracing::info!(
            conn = ctx.id,
            "no {namespace}.{name}: the device did not declare {namespace} in its Discovery"
        );
    }
    ok
}

/// Speak with the MP3 attachment, then an ExpectSpeech if the control API
/// asked for one; whether it did.
fn speak(a: &mut Answer, ctx: &Ctx, dialog: &str) -> bool {
    let cid = format!("avs-sim-tts-{}", uuid::Uuid::new_v4().simple());
    let payload = json!({
        "url": format!("cid:{cid}"),
        "format": "AUDIO_MPEG",
        "token": format!("avs-sim-speak-{}", uuid::Uuid::new_v4().simple()),
    });
    let _ = a.directive("SpeechSynthesizer", "Speak", dialog, payload);
    let mp3 = a.related.binary(&cid, &ctx.shared.answer_mp3);
    a.send(mp3);
    // What a test scripted for this answer follows the Speak, as AVS
    // answers "set a timer" with speech and then the SetAlert.
    for d in ctx.shared.interfaces.take_script() {
        if may_direct(ctx, &d.namespace, &d.name) {
            let sent = a.directive(&d.namespace, &d.name, dialog, d.payload);
            super::interfaces::sent(&ctx.shared, &sent);
        }
    }
    match ctx
        .shared
        .take_expect_speech()
        .filter(|_| may_direct(ctx, "SpeechRecognizer", "ExpectSpeech"))
    {
        Some(timeout) => {
            // The initiator is opaque to the device, which must send it
            // back unchanged in the next Recognize (§D.3).
            let payload = json!({
                "timeoutInMilliseconds": timeout,
                "initiator": {"type": "EXPECT_SPEECH", "payload": {"token": format!("avs-sim-expect-{}", uuid::Uuid::new_v4().simple())}},
            });
            let _ = a.directive("SpeechRecognizer", "ExpectSpeech", dialog, payload);
            true
        }
        None => false,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
