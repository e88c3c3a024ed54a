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
use super::state::RecognizeRecord;
use crate::avs::multipart::Event;

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

    fn directive(&mut self, namespace: &str, name: &str, dialog: &str, payload: Value) {
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
    }

    fn stop_capture(&mut self, dialog: &str) {
        self.directive("SpeechRecognizer", "StopCapture", dialog, json!({}));
    }

    fn close(mut self) {
        let _ = self.out.send_data(self.related.close(), true);
    }
}

/// Handle a Recognize whose metadata was accepted; the body is at the
/// start of its second part.
pub(super) async fn recognize(
    mut reader: BodyReader,
    mut respond: SendResponse<Bytes>,
    ctx: Arc<Ctx>,
    meta: Metadata,
    started: Instant,
    index: usize,
) {
    let settings = ctx.shared.dialog();
    let dialog = meta.dialog_request_id.clone().unwrap_or_default();
    let profile = meta.payload["profile"].as_str().unwrap_or("").to_string();
    let cloud_ends = profile != "CLOSE_TALK";
    let mut rec = RecognizeRecord {
        connection: ctx.id,
        dialog_request_id: dialog.clone(),
        profile,
        initiator: meta
            .payload
            .get("initiator")
            .cloned()
            .unwrap_or(Value::Null),
        ..RecognizeRecord::default()
    };
    let refuse = |respond: &mut SendResponse<Bytes>, reader: BodyReader, r: Refusal| {
        set_status(&ctx, index, r.status);
        ctx.refuse(respond, EVENTS_PATH, &r);
        reader.drain();
    };
    // A stream the client reset is not refused (nobody would hear it) but
    // recorded as a failed Recognize, like one reset during its audio.
    let mut early_failure = None;
    match reader.next().await {
        Ok(Event::PartStart(h)) => {
            if let Err(r) = check_audio_part(&h, 0) {
                return refuse(&mut respond, reader, r);
            }
        }
        Ok(_) => {
            return refuse(
                &mut respond,
                reader,
                Refusal::invalid("a Recognize must carry an `audio` part"),
            );
        }
        Err(e @ BodyError::Multipart(_)) => return refuse(&mut respond, reader, e.refusal()),
        Err(e) => early_failure = Some(e.to_string()),
    }

    let mut audio = Audio::new(settings.silence_rms);
    let mut answer: Option<Answer> = None;
    let mut stop_at: Option<Instant> = None;
    let mut grace_until: Option<Instant> = None;
    let mut audio_ended = false;
    let stop_capture = |answer: &mut Option<Answer>,
                        respond: &mut SendResponse<Bytes>,
                        audio: &Audio,
                        rec: &mut RecognizeRecord| {
        *answer = Answer::open(respond);
        if let Some(a) = answer {
            a.stop_capture(&dialog);
        }
        let now = Instant::now();
        rec.stop_capture_ms = audio.first_at.map(|f| ms(now - f));
        tracing::info!(conn = ctx.id, "StopCapture sent");
    };
    let failure = if early_failure.is_some() {
        early_failure
    } else {
        loop {
            let stop_pending = cloud_ends && answer.is_none();
            tokio::select! {
                ev = reader.next() => match ev {
                    Ok(Event::Data(b)) if !audio_ended => {
                        let first = audio.first_at.is_none();
                        let now = Instant::now();
                        let eos = audio.push(&b, now, settings.end_of_speech);
                        if first {
                            stop_at = Some(now + settings.stop_capture);
                        }
                        if eos && stop_pending {
                            stop_at = Some(now);
                        }
                    }
                    Ok(Event::Data(_)) => {}
                    Ok(Event::PartEnd) => audio_ended = true,
                    Ok(Event::PartStart(h)) => {
                        let r = check_audio_part(&h, 1)
                            .err()
                            .unwrap_or_else(|| Refusal::invalid("more than one `audio` part"));
                        if answer.is_none() {
                            return refuse(&mut respond, reader, r);
                        }
                        break Some(r.description);
                    }
                    Ok(Event::End) => break None,
                    Err(e @ BodyError::Multipart(_)) if answer.is_none() => {
                        return refuse(&mut respond, reader, e.refusal());
                    }
                    Err(e) => break Some(e.to_string()),
                },
                _ = sleep_until_opt(stop_at), if stop_pending => {
                    stop_capture(&mut answer, &mut respond, &audio, &mut rec);
                    grace_until = Some(Instant::now() + settings.close_grace);
                }
                // The client kept streaming after StopCapture: answer anyway.
                _ = sleep_until_opt(grace_until) => break None,
            }
        }
    };

    let verdict = audio.verdict();
    rec.audio_bytes = audio.bytes;
    rec.first_audio_ms = audio.first_at.map(|f| ms(f - started));
    rec.stream_ms = match (audio.first_at, audio.last_at) {
        (Some(f), Some(l)) => ms(l - f),
        _ => 0.0,
    };
    rec.audio_ms = audio.bytes as f64 / 32.0;
    rec.peak_rms = (audio.peak_rms * 10.0).round() / 10.0;
    let status = if let Some(why) = failure {
        // The stream broke (the client reset it, e.g. on Stop) or broke
        // the rules after the 200: nothing more can be said on it.
        rec.outcome = format!("failed: {why}");
        match answer.take() {
            Some(a) => {
                a.close();
                200
            }
            // Nothing was answered: the event keeps status 0.
            None => 0,
        }
    } else {
        match (answer.take(), verdict) {
            (None, Err(why)) => {
                rec.outcome = format!("bad audio: {why}");
                let r = Refusal::invalid(format!("bad Recognize audio: {why}"));
                ctx.refuse(&mut respond, EVENTS_PATH, &r);
                400
            }
            (None, Ok(false)) if !cloud_ends => {
                rec.outcome = "silence".into();
                let resp = Response::builder().status(204).body(()).unwrap_or_default();
                let _ = respond.send_response(resp, true);
                204
            }
            (mut a, verdict) => {
                if a.is_none() {
                    if cloud_ends {
                        // The audio ended before the StopCapture deadline:
                        // the cloud heard the end of it.
                        stop_capture(&mut a, &mut respond, &audio, &mut rec);
                    } else {
                        a = Answer::open(&mut respond);
                    }
                }
                match verdict {
                    Ok(true) => {
                        rec.outcome = "speak".into();
                        if let Some(a) = a.as_mut() {
                            rec.expect_speech = speak(a, &ctx, &dialog);
                        }
                    }
                    Ok(false) => rec.outcome = "silence".into(),
                    Err(why) => rec.outcome = format!("bad audio: {why}"),
                }
                if let Some(a) = a {
                    a.close();
                }
                200
            }
        }
    };
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

/// Speak with the MP3 attachment, then an ExpectSpeech if the control API
/// asked for one; whether it did.
fn speak(a: &mut Answer, ctx: &Ctx, dialog: &str) -> bool {
    let cid = format!("avs-sim-tts-{}", uuid::Uuid::new_v4().simple());
    let payload = json!({
        "url": format!("cid:{cid}"),
        "format": "AUDIO_MPEG",
        "token": format!("avs-sim-speak-{}", uuid::Uuid::new_v4().simple()),
    });
    a.directive("SpeechSynthesizer", "Speak", dialog, payload);
    let mp3 = a.related.binary(&cid, &ctx.shared.answer_mp3);
    a.send(mp3);
    match ctx.shared.take_expect_speech() {
        Some(timeout) => {
            // The initiator is opaque to the device, which must send it
            // back unchanged in the next Recognize (§D.3).
            let payload = json!({
                "timeoutInMilliseconds": timeout,
                "initiator": {"type": "EXPECT_SPEECH", "payload": {"token": format!("avs-sim-expect-{}", uuid::Uuid::new_v4().simple())}},
            });
            a.directive("SpeechRecognizer", "ExpectSpeech", dialog, payload);
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
