//! Where a Play's bytes come from: the one seam between the player and the
//! media fetching. [`open_stream`] turns an `https://` URL into a bounded
//! stream of bytes and an outcome; a `cid:` attachment is kept in memory
//! (bounded) until its item plays. The player knows nothing else about
//! the network: a media module (playlists, reconnects, other codecs)
//! replaces the body of [`open_stream`] and keeps its signature.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Chunks in flight between the fetch and the decoder: the decoder pulls
/// at playback speed, so the fetch waits here (back-pressure), never
/// holding more than this many chunks.
pub const STREAM_QUEUE: usize = 32;
/// The largest attachment kept for a `cid:` item (AVS's attachments are
/// short prompts and jingles).
pub const MAX_ATTACHMENT: usize = 8 << 20;
/// How long a connection may take before the item fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the stream may go without a byte before the item fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `error.type` of PlaybackFailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaErrorType {
    /// Anything else.
    Unknown,
    /// The server refused the request (4xx: bad URL, expired, forbidden).
    InvalidRequest,
    /// The server could not be reached.
    ServiceUnavailable,
    /// The server failed (5xx).
    InternalServerError,
    /// The device failed (decoder, speaker).
    InternalDeviceError,
}

impl MediaErrorType {
    /// As the event spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "MEDIA_ERROR_UNKNOWN",
            Self::InvalidRequest => "MEDIA_ERROR_INVALID_REQUEST",
            Self::ServiceUnavailable => "MEDIA_ERROR_SERVICE_UNAVAILABLE",
            Self::InternalServerError => "MEDIA_ERROR_INTERNAL_SERVER_ERROR",
            Self::InternalDeviceError => "MEDIA_ERROR_INTERNAL_DEVICE_ERROR",
        }
    }
}

/// Why a stream failed, for PlaybackFailed and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MediaError {
    /// The documented error type.
    pub kind: MediaErrorType,
    /// What failed, in words.
    pub message: String,
}

impl MediaError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: MediaErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A stream being fetched: MP3 bytes in order on `data` (closed at the
/// end), and how it ended on `outcome`, sent before `data` closes (once
/// the last byte is queued, or at the failure).
pub struct Opened {
    /// The bytes, for the speaker.
    pub data: mpsc::Receiver<Bytes>,
    /// `Ok` when the whole body arrived, else why not.
    pub outcome: oneshot::Receiver<Result<(), MediaError>>,
}

/// The HTTP client for media: https only, the system's trust store.
pub fn client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(STALL_TIMEOUT)
        .user_agent(concat!("avsd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the media HTTP client: {e}"))
}

/// THE SEAM: fetch `url` as one whole-body stream. Replaced by the media
/// module (playlists, Range reconnects, ICY); the player only needs this.
pub fn open_stream(client: &reqwest::Client, url: &str) -> Opened {
    let (tx, data) = mpsc::channel(STREAM_QUEUE);
    let (done, outcome) = oneshot::channel();
    let request = client.get(url);
    let url = url.to_string();
    tokio::spawn(async move {
        let result = fetch(request, &url, &tx).await;
        if let Err(e) = &result {
            tracing::warn!(url, error = %e, "media stream failed");
        }
        // The outcome before the end of the bytes: whoever sees the end
        // can read why.
        let _ = done.send(result);
        drop(tx);
    });
    Opened { data, outcome }
}

async fn fetch(
    request: reqwest::RequestBuilder,
    url: &str,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), MediaError> {
    let mut resp = request.send().await.map_err(|e| {
        MediaError::new(
            MediaErrorType::ServiceUnavailable,
            format!("cannot reach {url}: {e}"),
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        let kind = if status.is_server_error() {
            MediaErrorType::InternalServerError
        } else {
            MediaErrorType::InvalidRequest
        };
        return Err(MediaError::new(kind, format!("{url} answered {status}")));
    }
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if tx.send(chunk).await.is_err() {
                    // The player let go (stopped): not a failure.
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(MediaError::new(
                    MediaErrorType::ServiceUnavailable,
                    format!("{url} broke off: {e}"),
                ));
            }
        }
    }
}

/// A `cid:` attachment read into memory as it arrives (at most
/// [`MAX_ATTACHMENT`] bytes); shared by the items that name it.
pub type Kept = Arc<Result<Vec<Bytes>, MediaError>>;

/// Read `data` to its end; the result on the returned receiver.
pub fn keep(mut data: mpsc::Receiver<Bytes>) -> oneshot::Receiver<Kept> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut parts = Vec::new();
        let mut size = 0;
        let mut result = Ok(());
        while let Some(part) = data.recv().await {
            size += part.len();
            if size > MAX_ATTACHMENT {
                result = Err(MediaError::new(
                    MediaErrorType::InternalDeviceError,
                    format!("the attachment is over {MAX_ATTACHMENT} bytes"),
                ));
                // Read on, so the stream that carries it is not held up.
                continue;
            }
            parts.push(part);
        }
        let _ = tx.send(Arc::new(result.map(|()| parts)));
    });
    rx
}

/// Play a kept attachment from `offset_ms` on: its bytes on a fresh
/// stream, the ones before the offset left out.
pub fn replay(kept: oneshot::Receiver<Kept>, offset_ms: u64) -> Opened {
    let (tx, data) = mpsc::channel(STREAM_QUEUE);
    let (done, outcome) = oneshot::channel();
    tokio::spawn(async move {
        let result = match kept.await {
            Err(_) => Err(MediaError::new(
                MediaErrorType::InternalDeviceError,
                "the attachment was lost",
            )),
            Ok(kept) => match kept.as_ref() {
                Err(e) => Err(e.clone()),
                Ok(parts) => {
                    let mut skip = mp3_seek(parts, offset_ms);
                    for part in parts {
                        let part = if skip >= part.len() {
                            skip -= part.len();
                            continue;
                        } else {
                            part.slice(std::mem::take(&mut skip)..)
                        };
                        if tx.send(part).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                }
            },
        };
        let _ = done.send(result);
        drop(tx);
    });
    Opened { data, outcome }
}

/// The byte where `offset_ms` of a constant-bit-rate MP3 starts, from its
/// first frame's bit rate (the decoder finds the next frame from there);
/// 0 when the offset is 0 or no frame header is found. A variable-rate
/// file lands near the offset, not on it.
pub fn mp3_seek(parts: &[Bytes], offset_ms: u64) -> usize {
    if offset_ms == 0 {
        return 0;
    }
    // The first 64 KiB are enough to find a tag and the first frame.
    let head: Vec<u8> = parts
        .iter()
        .flat_map(|p| p.iter().copied())
        .take(64 << 10)
        .collect();
    let mut at = 0;
    if head.len() >= 10 && &head[..3] == b"ID3" {
        let size = head[6..10]
            .iter()
            .fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
        at = 10 + size;
    }
    while at + 4 <= head.len() {
        if let Some(kbps) = frame_kbps(&head[at..at + 4]) {
            let total: usize = parts.iter().map(Bytes::len).sum();
            let offset = usize::try_from(offset_ms.saturating_mul(kbps) / 8).unwrap_or(usize::MAX);
            return (at + offset).min(total);
        }
        at += 1;
    }
    0
}

/// The bit rate of an MPEG audio layer III frame header, in kbit/s.
fn frame_kbps(h: &[u8]) -> Option<u64> {
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 0b11; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    let layer = (h[1] >> 1) & 0b11; // 1: layer III
    let index = usize::from(h[2] >> 4);
    let rate = (h[2] >> 2) & 0b11;
    if version == 1 || layer != 1 || index == 0 || index == 15 || rate == 3 {
        return None;
    }
    const MPEG1: [u64; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const MPEG2: [u64; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    Some(if version == 3 {
        MPEG1[index]
    } else {
        MPEG2[index]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cbr_mp3_is_cut_at_its_bit_rate_after_the_tag() {
        // ID3v2 tag of 20 bytes, then MPEG-1 layer III, 128 kbit/s, 44.1 kHz.
        let mut data = b"ID3\x04\x00\x00\x00\x00\x00\x14".to_vec();
        data.extend([0u8; 20]);
        data.extend([0xff, 0xfb, 0x90, 0x64]);
        data.extend(vec![0u8; 100_000]);
        let parts = vec![Bytes::from(data)];
        assert_eq!(mp3_seek(&parts, 0), 0);
        assert_eq!(mp3_seek(&parts, 1000), 30 + 16_000);
        assert_eq!(mp3_seek(&parts, 1_000_000), 100_034, "never past the end");
        assert_eq!(mp3_seek(&[Bytes::from_static(b"not an mp3")], 500), 0);
    }
}
