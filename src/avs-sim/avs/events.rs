//! `POST /v20160207/events`: the content type, the downchannel-first and
//! SynchronizeState-first rules, the `metadata` part, the Discovery report
//! and the context against what the device declared, at most one `audio`
//! part; `Recognize` goes on to the dialog, a Discovery report gets 202,
//! everything else 204.

use std::sync::Arc;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, Response};
use tokio::time::Instant;

use super::EVENTS_PATH;
use super::capabilities::{Declaration, check_context, check_report};
use super::related::Related;
use super::rules::{Metadata, Refusal, check_metadata, check_order, form_boundary, no_downchannel};
use super::server::{Ctx, drain};
use super::state::{DiscoveryRecord, EventRecord, Target};
use avs_proto::multipart::{Limits, MultipartError, Parser, PartHeaders, Piece};

/// Why reading a request body stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// The multipart framing is broken.
    #[error("malformed multipart/form-data body: {0}")]
    Multipart(#[from] MultipartError),
    /// The client reset the stream or the connection broke.
    #[error("the request stream failed: {0}")]
    Stream(#[from] h2::Error),
}

impl BodyError {
    /// The 400 that says what went wrong.
    pub(super) fn refusal(&self) -> Refusal {
        Refusal::invalid(self.to_string())
    }
}

/// An event body read part by part as its DATA frames arrive.
pub(super) struct BodyReader {
    body: RecvStream,
    parser: Parser,
}

impl BodyReader {
    fn new(body: RecvStream, boundary: &str) -> Result<Self, (Refusal, RecvStream)> {
        match Parser::new(boundary, Limits::default()) {
            Ok(parser) => Ok(Self { body, parser }),
            Err(e) => Err((Refusal::invalid(format!("unusable boundary: {e}")), body)),
        }
    }

    /// Discard the rest of the body (see [`drain`]).
    pub(super) fn drain(self) {
        drain(self.body);
    }

    /// The next multipart event; `End` again and again once the body is
    /// complete. Cancel-safe: bytes are handed to the parser in the same
    /// poll that receives them.
    pub(super) async fn next(&mut self) -> Result<Piece, BodyError> {
        loop {
            if let Some(event) = self.parser.next_piece()? {
                return Ok(event);
            }
            if self.parser.is_done() {
                return Ok(Piece::End);
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.parser.push(&chunk);
                }
                None => self.parser.finish(),
            }
        }
    }
}

/// Record an event whose metadata was read, with the status it got (0
/// while a Recognize is still being answered); its index in the list.
pub(super) fn record(ctx: &Ctx, meta: &Metadata, status: u16) -> usize {
    let mut index = 0;
    ctx.shared.update(|s| {
        index = s.events.len();
        s.events.push(EventRecord {
            connection: ctx.id,
            name: meta.name.clone(),
            status,
            dialog_request_id: meta.dialog_request_id.clone(),
            inactive_seconds: meta.inactive_seconds().ok(),
            payload: meta.payload.clone(),
        })
    });
    index
}

/// Set the status of the event [`record`] put at `index` (unless the
/// statistics were reset since).
pub(super) fn set_status(ctx: &Ctx, index: usize, status: u16) {
    ctx.shared.update(|s| {
        if let Some(e) = s.events.get_mut(index)
            && e.connection == ctx.id
        {
            e.status = status;
        }
    });
}

/// Handle one event stream.
pub(super) async fn event(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ctx: Arc<Ctx>,
) {
    let started = Instant::now();
    // Route checked it; Alexa.Discovery's scope must carry the same one.
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let boundary = match form_boundary(req.headers()) {
        Ok(b) => b,
        Err(r) => {
            ctx.refuse(&mut respond, EVENTS_PATH, &r);
            return drain(req.into_body());
        }
    };
    // AVS asks for the downchannel first. One that ended later (a GOAWAY
    // ends it, yet h2 lets older streams finish; a client reopening a
    // broken one) does not make the connection refuse events.
    let refused = !ctx.state().had_downchannel;
    if refused {
        ctx.refuse(&mut respond, EVENTS_PATH, &no_downchannel());
        return drain(req.into_body());
    }
    let mut reader = match BodyReader::new(req.into_body(), &boundary) {
        Ok(r) => r,
        Err((r, body)) => {
            ctx.refuse(&mut respond, EVENTS_PATH, &r);
            return drain(body);
        }
    };
    let meta = match read_metadata(&mut reader).await {
        Ok(m) => m,
        Err(r) => {
            ctx.refuse(&mut respond, EVENTS_PATH, &r);
            return reader.drain();
        }
    };
    tracing::info!(conn = ctx.id, event = meta.name, "event");
    let synced = ctx.state().synced;
    let mut declaration = None;
    let verdict = check_order(synced, &meta.name)
        .and_then(|()| {
            if meta.is_discovery() {
                declaration = Some(check_report(&meta.value, &bearer)?);
                Ok(())
            } else {
                let context = meta.context.as_deref().unwrap_or_default();
                let declared = ctx.declared();
                check_context(context, declared.as_ref())?;
                super::wakeword::check_declared(meta.payload.get("initiator"), declared.as_ref())
            }
        })
        .err()
        .or_else(|| {
            ctx.shared
                .take_status(Target::Events)
                .map(Refusal::for_status)
        })
        // Last, so an interface remembers only events nothing else refused.
        .or_else(|| super::interfaces::event(&ctx, &meta).err());
    if let Some(r) = verdict {
        let _ = record(&ctx, &meta, r.status);
        ctx.refuse(&mut respond, EVENTS_PATH, &r);
        return reader.drain();
    }
    ctx.delay(Target::Events).await;
    if meta.is_recognize() {
        // Recorded on arrival, so the list keeps the order events came in
        // even though a Recognize is answered only after its audio.
        let index = record(&ctx, &meta, 0);
        return super::dialog::recognize(reader, respond, ctx, meta, started, index).await;
    }
    if let Err(r) = read_rest(&mut reader).await {
        let _ = record(&ctx, &meta, r.status);
        ctx.refuse(&mut respond, EVENTS_PATH, &r);
        return reader.drain();
    }
    let mut status = 204;
    let mut resp = Response::builder();
    if let Some(declared) = declaration {
        // AVS takes a Discovery report for processing: 202 Accepted (the
        // AVS Device SDK waits for exactly that). Its Alexa.EventProcessed
        // directive goes only to devices that declare the Alexa
        // interface, which avs-sim does not implement.
        status = 202;
        remember(&ctx, declared);
    }
    if meta.name == "System.SynchronizeState" {
        ctx.state().synced = true;
        // AVS answers events 200 or 204; a 200 may come with a multipart
        // Content-Type and not a byte of body.
        if ctx.shared.sync_empty_200() {
            status = 200;
            resp = resp.header("content-type", Related::new().content_type());
        }
    }
    let resp = resp.status(status).body(()).unwrap_or_default();
    if let Err(e) = respond.send_response(resp, true) {
        tracing::debug!(conn = ctx.id, "cannot answer {}: {e}", meta.name);
    }
    let _ = record(&ctx, &meta, status);
}

/// Keep what a device declared, for this connection and for the device,
/// and show it in the statistics.
fn remember(ctx: &Ctx, declared: Declaration) {
    tracing::info!(
        conn = ctx.id,
        endpoint = declared.endpoint_id,
        "Discovery accepted: {}",
        declared
            .capabilities
            .iter()
            .map(|c| format!("{} {}", c.interface, c.version))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let device = {
        let mut st = ctx.state();
        st.declared = Some(declared.clone());
        st.device.clone()
    };
    ctx.shared.remember_declaration(&device, declared.clone());
    ctx.shared.update(|s| {
        s.discoveries.push(DiscoveryRecord {
            connection: ctx.id,
            declaration: declared,
        })
    });
}

/// The first part: `metadata`, JSON, checked.
async fn read_metadata(r: &mut BodyReader) -> Result<Metadata, Refusal> {
    match r.next().await.map_err(|e| e.refusal())? {
        Piece::PartStart(h) => {
            let name = h.form_name();
            if name.as_deref() != Some("metadata") {
                return Err(Refusal::invalid(format!(
                    "the first part must be the one named `metadata` (found {})",
                    describe_name(name)
                )));
            }
            if !h.is_json() {
                return Err(Refusal::invalid(format!(
                    "the metadata part's Content-Type must be application/json (found {})",
                    h.content_type.as_deref().unwrap_or("none")
                )));
            }
        }
        _ => return Err(Refusal::invalid("the body has no parts")),
    }
    let mut json = Vec::new();
    loop {
        match r.next().await.map_err(|e| e.refusal())? {
            Piece::Data(b) => json.extend_from_slice(&b),
            Piece::PartEnd => break,
            _ => return Err(Refusal::invalid("the metadata part is cut short")),
        }
    }
    check_metadata(&json)
}

fn describe_name(name: Option<String>) -> String {
    name.map_or("a part without a form-data name".to_string(), |n| {
        format!("`{n}`")
    })
}

/// Check a part after the metadata: only one, named `audio`, binary.
pub(super) fn check_audio_part(h: &PartHeaders, audio_parts_before: usize) -> Result<(), Refusal> {
    let name = h.form_name();
    if name.as_deref() != Some("audio") {
        return Err(Refusal::invalid(format!(
            "unexpected part {}: an event carries a `metadata` part and at most one `audio` part",
            describe_name(name)
        )));
    }
    if audio_parts_before > 0 {
        return Err(Refusal::invalid("more than one `audio` part in one event"));
    }
    let ct = h.content_type.as_deref().unwrap_or("none");
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/octet-stream"))
    {
        return Err(Refusal::invalid(format!(
            "the audio part's Content-Type must be application/octet-stream (found {ct})"
        )));
    }
    Ok(())
}

/// The rest of a non-Recognize event: at most one audio part, to the end.
async fn read_rest(r: &mut BodyReader) -> Result<(), Refusal> {
    let mut audio_parts = 0;
    loop {
        match r.next().await.map_err(|e| e.refusal())? {
            Piece::PartStart(h) => {
                check_audio_part(&h, audio_parts)?;
                audio_parts += 1;
            }
            Piece::Data(_) | Piece::PartEnd => {}
            Piece::End => return Ok(()),
        }
    }
}
