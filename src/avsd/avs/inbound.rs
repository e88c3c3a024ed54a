//! What AVS sends us, as it arrives: directives (JSON parts) and their
//! binary attachments (streamed, so the player can start before the MP3 is
//! complete), read from the downchannel or from an event's response.

use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use tokio::sync::mpsc;

use avs_proto::message::{Directive, parse_directive};
use avs_proto::multipart::{Limits, MultipartError, Parser, Piece, boundary_from_content_type};

/// How many chunks of one attachment may wait for its reader.
const ATTACHMENT_QUEUE: usize = 64;

/// One thing AVS sent.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed directive, with its JSON text for error reports.
    Directive {
        /// The parsed envelope.
        directive: Directive,
        /// The part as received.
        raw: String,
    },
    /// A binary part; its bytes follow on `data` until the sender drops.
    Attachment {
        /// Content-ID without angle brackets.
        content_id: String,
        /// The bytes, in order.
        data: mpsc::Receiver<Bytes>,
    },
    /// The answer to the Recognize that started dialog `dialog_request_id`
    /// is complete: every directive it held came before this. Sent by the
    /// dialog's upload through the same queue, so the order holds.
    Answered {
        /// The dialog the Recognize started.
        dialog_request_id: String,
        /// How the exchange ended, in words for `LastError` (and its
        /// reason) when it failed.
        outcome: Result<(), (crate::dialog::DialogReason, String)>,
    },
    /// The user did something (Tap, Hold, Release, Stop): the inactivity
    /// clock starts again. Sent by the dialog.
    UserActivity,
    /// A JSON part that is not a directive envelope: report it to AVS.
    Malformed {
        /// The part as received.
        raw: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Why reading a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The Content-Type names no usable boundary.
    #[error("bad Content-Type `{0}`: {1}")]
    ContentType(String, String),
    /// The multipart framing is broken.
    #[error("malformed multipart body: {0}")]
    Multipart(#[from] MultipartError),
    /// HTTP/2 ended the stream with an error.
    #[error("stream failed: {0}")]
    H2(#[from] h2::Error),
    /// The body ended before the closing delimiter.
    #[error("the body ended before its closing boundary")]
    Truncated,
    /// Nothing arrived for too long.
    #[error("no data for {0:?}")]
    Stalled(Duration),
    /// Nobody listens any more (shutting down).
    #[error("the directive router is gone")]
    Closed,
}

/// Read a `multipart/related` body to its end, sending what it holds to
/// `out`. `stall` bounds the wait for each chunk (none on the downchannel,
/// which is quiet for hours).
pub async fn pump(
    mut body: RecvStream,
    content_type: &str,
    out: &mpsc::Sender<Inbound>,
    stall: Option<Duration>,
) -> Result<(), PumpError> {
    let boundary = boundary_from_content_type(content_type)
        .map_err(|e| PumpError::ContentType(content_type.to_string(), e.to_string()))?;
    let mut parser = Parser::new(&boundary, Limits::default())?;
    let mut part = Part::None;
    let mut ended = false;
    loop {
        let next = match stall {
            Some(limit) => tokio::time::timeout(limit, body.data())
                .await
                .map_err(|_| PumpError::Stalled(limit))?,
            None => body.data().await,
        };
        match next {
            Some(chunk) => {
                let chunk = chunk?;
                // Give the window back at once: our own queues bound memory.
                let _ = body.flow_control().release_capacity(chunk.len());
                parser.push(&chunk);
            }
            None => {
                ended = true;
                parser.finish();
            }
        }
        while let Some(event) = parser.next_piece()? {
            match event {
                Piece::PartStart(headers) if headers.is_json() => part = Part::Json(Vec::new()),
                Piece::PartStart(headers) => {
                    let (tx, data) = mpsc::channel(ATTACHMENT_QUEUE);
                    let content_id = headers.content_id.clone().unwrap_or_default();
                    out.send(Inbound::Attachment { content_id, data })
                        .await
                        .map_err(|_| PumpError::Closed)?;
                    part = Part::Binary(Some(tx));
                }
                Piece::Data(bytes) => match &mut part {
                    Part::Json(buf) => buf.extend_from_slice(&bytes),
                    Part::Binary(tx) => {
                        // A reader that went away does not stop the stream.
                        if let Some(sender) = tx
                            && sender.send(bytes).await.is_err()
                        {
                            *tx = None;
                        }
                    }
                    Part::None => {}
                },
                Piece::PartEnd => {
                    if let Part::Json(buf) = std::mem::replace(&mut part, Part::None) {
                        out.send(to_inbound(buf))
                            .await
                            .map_err(|_| PumpError::Closed)?;
                    }
                }
                Piece::End => return Ok(()),
            }
        }
        if ended {
            return Err(PumpError::Truncated);
        }
    }
}

enum Part {
    None,
    Json(Vec<u8>),
    Binary(Option<mpsc::Sender<Bytes>>),
}

fn to_inbound(buf: Vec<u8>) -> Inbound {
    let raw = String::from_utf8_lossy(&buf).into_owned();
    match parse_directive(&buf) {
        Ok(directive) => Inbound::Directive { directive, raw },
        Err(e) => Inbound::Malformed {
            raw,
            reason: e.to_string(),
        },
    }
}
