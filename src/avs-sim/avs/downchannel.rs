//! The downchannel (`GET /v20160207/directives`): answered 200 with a
//! `multipart/related` body at once and kept open for the connection's
//! life; directives pushed through the control API go out on it, whole or
//! in tiny DATA frames; a GOAWAY ends it, as AVS does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use h2::server::SendResponse;
use http::Response;
use rand::Rng;
use tokio::sync::mpsc;

use super::DIRECTIVES_PATH;
use super::related::Related;
use super::rules::Refusal;
use super::server::Ctx;
use super::state::{DownMsg, Target};

/// Tiny DATA frames sent back to back before a pause; see [`send_frames`].
const TINY_GROUP: usize = 4;
const TINY_PAUSE: Duration = Duration::from_millis(2);

/// The downchannel: 200 with a `multipart/related` body at once, then
/// directives as the control API pushes them, for the connection's life.
pub(super) async fn serve(mut respond: SendResponse<Bytes>, ctx: Arc<Ctx>) {
    ctx.delay(Target::Downchannel).await;
    if let Some(code) = ctx.shared.take_status(Target::Downchannel) {
        ctx.refuse(&mut respond, DIRECTIVES_PATH, &Refusal::for_status(code));
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    // h2 hands us a client's reset of its old downchannel before its new
    // GET, but the old stream's task may not have run yet: give it a moment
    // to let go, so only a downchannel really still open is refused.
    for _ in 0..20 {
        let open = ctx
            .state()
            .downchannel
            .as_ref()
            .is_some_and(|d| !d.is_closed());
        if !open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    {
        let mut st = ctx.state();
        if st.downchannel.as_ref().is_some_and(|d| !d.is_closed()) {
            drop(st);
            let r = Refusal::invalid("a downchannel is already open on this connection");
            ctx.refuse(&mut respond, DIRECTIVES_PATH, &r);
            return;
        }
        // Registered before the 200 goes out, so a client that has seen
        // the 200 can rely on pushes reaching it.
        st.downchannel = Some(tx);
        st.had_downchannel = true;
    }
    let related = Related::new();
    let head = Response::builder()
        .status(200)
        .header("content-type", related.content_type())
        .body(())
        .unwrap_or_default();
    let mut out = match respond.send_response(head, false) {
        Ok(out) => out,
        Err(e) => {
            tracing::debug!(conn = ctx.id, "cannot answer the downchannel: {e}");
            ctx.state().downchannel = None;
            return;
        }
    };
    ctx.shared.update(|s| s.downchannels += 1);
    tracing::info!(conn = ctx.id, "downchannel open");
    let why = write_downchannel(&mut out, &related, &mut rx).await;
    tracing::info!(conn = ctx.id, "downchannel ended: {why}");
    // With our receiver gone our sender reads as closed; a newer
    // downchannel's sender would not, and stays.
    drop(rx);
    let mut st = ctx.state();
    if st.downchannel.as_ref().is_some_and(|d| d.is_closed()) {
        st.downchannel = None;
    }
}

async fn write_downchannel(
    out: &mut SendStream<Bytes>,
    related: &Related,
    rx: &mut mpsc::UnboundedReceiver<DownMsg>,
) -> String {
    if let Err(e) = out.send_data(related.open(), false) {
        return format!("write failed: {e}");
    }
    let mut pending: Option<DownMsg> = None;
    loop {
        let msg = if let Some(m) = pending.take() {
            Some(m)
        } else {
            tokio::select! {
                m = rx.recv() => m,
                r = std::future::poll_fn(|cx| out.poll_reset(cx)) => {
                    return match r {
                        Ok(reason) => format!("the client reset it ({reason:?})"),
                        Err(e) => format!("stream error: {e}"),
                    };
                }
            }
        };
        match msg {
            Some(DownMsg::Push {
                json,
                attachment,
                tiny,
                raw,
            }) => {
                let mut bytes = Vec::new();
                encode(related, &mut bytes, &json, attachment, raw);
                // Pushes queued back to back (a flood) go out together in
                // full-size DATA frames, as a busy server writes them; one
                // small frame each would meet h2's small-frame guard in the
                // client instead of the client's own handling.
                while !tiny && bytes.len() < COALESCE_BYTES {
                    match rx.try_recv() {
                        Ok(DownMsg::Push {
                            json,
                            attachment,
                            tiny: false,
                            raw,
                        }) => encode(related, &mut bytes, &json, attachment, raw),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = send_frames(out, Bytes::from(bytes), tiny).await {
                    return format!("write failed: {e}");
                }
            }
            Some(DownMsg::End) | None => {
                let _ = out.send_data(related.close(), true);
                return "closed by the stand-in".to_string();
            }
        }
    }
}

/// How many bytes of back-to-back pushes go out in one write.
const COALESCE_BYTES: usize = 64 * 1024;

/// Append one pushed directive (and its attachment) to `bytes`.
fn encode(
    related: &Related,
    bytes: &mut Vec<u8>,
    json: &Bytes,
    attachment: Option<(String, Bytes)>,
    raw: bool,
) {
    if raw {
        bytes.extend_from_slice(json);
    } else {
        bytes.extend_from_slice(&related.json(json));
    }
    if let Some((cid, data)) = attachment {
        bytes.extend_from_slice(&related.binary(&cid, &data));
    }
}

/// Write `data` as one DATA frame, or with `tiny` as frames of 1 to 7
/// bytes, so the client's parser meets every possible split.
///
/// Tiny frames go out in small groups with a pause between them: h2 (0.4.20
/// and later) ends a connection with ENHANCE_YOUR_CALM once about 100
/// small frames sit unread in its buffers, so an unpaced burst would test
/// that flood guard instead of the client's parser.
pub(super) async fn send_frames(
    out: &mut SendStream<Bytes>,
    data: Bytes,
    tiny: bool,
) -> Result<(), h2::Error> {
    if !tiny {
        return out.send_data(data, false);
    }
    let mut rest = data;
    let mut group = 0;
    while !rest.is_empty() {
        let n = rand::rng().random_range(1..=7).min(rest.len());
        out.send_data(rest.split_to(n), false)?;
        group += 1;
        if group == TINY_GROUP {
            group = 0;
            tokio::time::sleep(TINY_PAUSE).await;
        }
    }
    Ok(())
}
