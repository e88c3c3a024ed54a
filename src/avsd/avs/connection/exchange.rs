//! One event on one link: open the stream under the gate's rules, write the
//! multipart body (streaming audio as it comes), read the answer.

use bytes::Bytes;
use h2::SendStream;
use http::Method;
use tokio::sync::mpsc;

use super::{AudioPart, Gate, Settings};
use crate::auth::AuthHandle;
use crate::avs::inbound::{Inbound, PumpError, pump};
use crate::avs::link::{Link, LinkError};
use avs_proto::encode::FormData;
use avs_proto::message::{AvsException, parse_exception_body};
use kit::secret::Secret;

/// A wait for AVS's answer longer than this is logged.
const SAY_WAITING: std::time::Duration = std::time::Duration::from_secs(5);

/// The events path of AVS v20160207.
pub const EVENTS_PATH: &str = "/v20160207/events";

/// Why an event was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No link within the queue timeout.
    #[error("not connected to AVS")]
    NotConnected,
    /// No valid access token.
    #[error("no valid access token: {0}")]
    NotAuthorized(String),
    /// AVS refused the token (HTTP 403).
    #[error("AVS refused the access token (HTTP 403)")]
    Forbidden(Secret),
    /// AVS answered an error status, with its System.Exception if any.
    #[error("AVS answered HTTP {status}{}", exception.as_ref().map(|e| format!(": {} {}", e.payload.code, e.payload.description.clone().unwrap_or_default())).unwrap_or_default())]
    Status {
        /// HTTP status.
        status: u16,
        /// The exception body, when AVS sent one.
        exception: Option<AvsException>,
    },
    /// The stream broke or stalled.
    #[error("the event stream failed: {0}")]
    Stream(String),
}

impl From<LinkError> for SendError {
    fn from(e: LinkError) -> Self {
        Self::Stream(e.to_string())
    }
}

impl From<PumpError> for SendError {
    fn from(e: PumpError) -> Self {
        Self::Stream(e.to_string())
    }
}

/// Send `metadata` (and `audio`) as one event on `link`.
pub(crate) async fn exchange(
    link: &Link,
    auth: &AuthHandle,
    gate: &Gate,
    settings: &Settings,
    inbound: &mpsc::Sender<Inbound>,
    metadata: String,
    audio: Option<mpsc::Receiver<AudioPart>>,
) -> Result<u16, SendError> {
    let _slot = gate
        .slots
        .acquire()
        .await
        .map_err(|_| SendError::NotConnected)?;
    let token = auth
        .access_token()
        .await
        .map_err(|e| SendError::NotAuthorized(e.to_string()))?;
    let form = FormData::new();
    let head = form
        .head(&metadata)
        .map_err(|e| SendError::Stream(e.to_string()))?;
    // Held from opening until response headers, per interface: AVS answers
    // an interface's events in the order they began, and a Recognize that
    // is answered only once the user stopped talking must not hold back a
    // progress report due meanwhile (a separate interface, its own stream).
    let _in_order = gate.order(namespace(&metadata)).lock_owned().await;
    let (resp, body) = {
        // Opening is serialized (streams start in the order events were
        // let through) and waits out a back-off AVS asked for.
        let opening = gate.opening.lock().await;
        opening.wait().await;
        link.open(
            Method::POST,
            EVENTS_PATH,
            &token.value,
            Some(&form.content_type()),
            true,
        )
        .await?
    };
    let mut body = body.ok_or_else(|| SendError::Stream("no request body stream".into()))?;
    body.send_data(head, false)
        .map_err(|e| SendError::Stream(e.to_string()))?;
    let mut upload = match audio {
        Some(rx) => {
            body.send_data(form.audio_part_header(), false)
                .map_err(|e| SendError::Stream(e.to_string()))?;
            Some(AbortOnDrop(tokio::spawn(stream_audio(
                body,
                rx,
                form.tail(),
            ))))
        }
        None => {
            body.send_data(form.tail(), true)
                .map_err(|e| SendError::Stream(e.to_string()))?;
            None
        }
    };
    let mut resp = std::pin::pin!(resp);
    // AVS may not answer while the user still speaks (CLOSE_TALK is
    // answered only after the audio ends): the clock starts when the audio
    // is complete, which the dialog's length limit bounds.
    let early = match &mut upload {
        Some(AbortOnDrop(streaming)) => tokio::select! {
            _ = streaming => None,
            answered = resp.as_mut() => Some(answered),
        },
        None => None,
    };
    let resp = match early {
        Some(answered) => answered,
        None => {
            // A long silence is said in the log, so a stalled AVS is not a
            // silent stall of avsd.
            let deadline = tokio::time::Instant::now() + settings.stall_timeout;
            let quiet =
                tokio::time::timeout(settings.stall_timeout.min(SAY_WAITING), resp.as_mut());
            match quiet.await {
                Ok(answered) => answered,
                Err(_) => {
                    tracing::info!(
                        "still waiting for AVS to answer an event; giving up in {:?}",
                        deadline.saturating_duration_since(tokio::time::Instant::now())
                    );
                    tokio::time::timeout_at(deadline, resp).await.map_err(|_| {
                        link.suspect();
                        SendError::Stream(format!(
                            "no response within {:?}",
                            settings.stall_timeout
                        ))
                    })?
                }
            }
        }
    }
    .map_err(|e| SendError::Stream(e.to_string()))?;
    let status = resp.status().as_u16();
    gate.opening.lock().await.record(status);
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let recv = resp.into_body();
    let result = match status {
        // Amazon answers events 200 or 204, and a 200 may carry nothing:
        // any 2xx is success, its directives (if any) are directives.
        200..=299 if content_type.starts_with("multipart/") => {
            match pump(recv, &content_type, inbound, Some(settings.stall_timeout)).await {
                Err(e @ PumpError::Stalled(_)) => {
                    link.suspect();
                    Err(e.into())
                }
                Err(PumpError::Multipart(e)) if e.ended_before_any_part() => {
                    tracing::debug!("AVS answered an event {status} with no parts: success");
                    Ok(status)
                }
                other => other.map(|()| status).map_err(SendError::from),
            }
        }
        200..=299 => Ok(status),
        403 => Err(SendError::Forbidden(token.value)),
        _ => Err(SendError::Status {
            status,
            exception: read_exception(recv).await,
        }),
    };
    // The answer is complete; an upload still going (AVS stopped listening
    // first) has nothing left to say. Dropping it resets the stream.
    drop(upload);
    result
}

/// The interface (`header.namespace`) of an event, for its ordering; an
/// event that does not parse is ordered with the others like it.
fn namespace(metadata: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Header {
        namespace: String,
    }
    #[derive(serde::Deserialize)]
    struct Event {
        header: Header,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        event: Event,
    }
    match serde_json::from_str::<Envelope>(metadata) {
        // PlaybackController's buttons act on what AudioPlayer reports:
        // AVS sees them in the order they happened.
        Ok(e) if e.event.header.namespace == "PlaybackController" => "AudioPlayer".to_string(),
        Ok(e) => e.event.header.namespace,
        Err(_) => String::new(),
    }
}

/// Ends the audio upload with the exchange, also when the exchange itself
/// is dropped (the user pressed Stop): the request stream is then reset
/// instead of being closed as if the utterance were complete.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Write audio chunks as they come; close the body at the end of the
/// utterance, or reset the stream when the sender went away without one.
async fn stream_audio(mut body: SendStream<Bytes>, mut rx: mpsc::Receiver<AudioPart>, tail: Bytes) {
    loop {
        match rx.recv().await {
            Some(AudioPart::Data(chunk)) => {
                if body.send_data(chunk, false).is_err() {
                    return;
                }
            }
            Some(AudioPart::End) => {
                let _ = body.send_data(tail, true);
                return;
            }
            None => {
                body.send_reset(h2::Reason::CANCEL);
                return;
            }
        }
    }
}

async fn read_exception(mut recv: h2::RecvStream) -> Option<AvsException> {
    let mut buf = Vec::new();
    while let Some(Ok(chunk)) = recv.data().await {
        let _ = recv.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() > avs_proto::message::MAX_EXCEPTION_BODY {
            return None;
        }
    }
    parse_exception_body(&buf).ok()
}
