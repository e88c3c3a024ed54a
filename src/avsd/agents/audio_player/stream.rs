//! Where a Play's bytes come from: the one seam between the player and the
//! media module. [`open`] hands a URL to [`crate::media::open`]; a `cid:`
//! attachment is kept in memory (bounded) until its item plays, then goes
//! through [`crate::media::from_attachment`] ([`open_kept`]). Either way
//! the player gets a [`MediaStream`]: audio for the speaker, events
//! (metadata, stutters, how it ended) for the agent.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use crate::media::MediaErrorKind;
use crate::media::{self, FormatHint, Limits, MediaClient, MediaStream};

/// Chunks in flight between a kept attachment and the decoder.
pub const STREAM_QUEUE: usize = 32;
/// The largest attachment kept for a `cid:` item (AVS's attachments are
/// short prompts and jingles).
pub const MAX_ATTACHMENT: usize = 8 << 20;

/// Why a stream failed, for PlaybackFailed and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MediaError {
    /// The documented error type.
    pub kind: MediaErrorKind,
    /// What failed, in words.
    pub message: String,
}

impl MediaError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: MediaErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// THE SEAM: the stream of `url` from `offset_ms` on. An `https://` (or
/// `http://`) URL goes to the media module (playlists, Range reconnects,
/// ICY, stalls); the offset is skipped before the speaker sees audio.
pub fn open(client: &MediaClient, url: &str, offset_ms: u64) -> MediaStream {
    media::open(url, offset_ms, client, Limits::default())
}

/// A kept `cid:` attachment (an MP3, as AVS sends them) from `offset_ms`
/// on, through the same channels as a URL.
pub fn open_kept(kept: oneshot::Receiver<Kept>, offset_ms: u64) -> MediaStream {
    let hint = FormatHint {
        mime: Some("audio/mpeg".into()),
        ..FormatHint::default()
    };
    // The attachment is in memory already and its pieces share that
    // memory, so the whole of it may wait for the decoder: its end (and
    // PlaybackNearlyFinished) is known at once, as for a fetched file.
    let limits = Limits {
        queue: MAX_ATTACHMENT / media::MAX_PIECE + 1,
        ..Limits::default()
    };
    media::from_attachment(replay(kept, offset_ms), hint, &limits)
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
                    MediaErrorKind::InternalDeviceError,
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
/// channel, the ones before the offset left out. An attachment that could
/// not be kept yields nothing (the decoder then fails the item).
fn replay(kept: oneshot::Receiver<Kept>, offset_ms: u64) -> mpsc::Receiver<Bytes> {
    let (tx, data) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(async move {
        let kept = match kept.await {
            Ok(kept) => kept,
            Err(_) => {
                tracing::warn!("the attachment was lost before it played");
                return;
            }
        };
        let parts = match kept.as_ref() {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(error = %e, "the attachment cannot play");
                return;
            }
        };
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
    });
    data
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
