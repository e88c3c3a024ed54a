//! Media for AudioPlayer: one URL in, the encoded audio of one stream out,
//! fetched with bounded memory.
//!
//! # The seam
//!
//! ```text
//! let client = MediaClient::new(ca_file)?;            // once, for the daemon
//! let stream = media::open(url, offset_ms, &client, Limits::default());
//! // or, for a `cid:` attachment: media::from_attachment(rx, hint, &Limits::default())
//! let (audio, mut events) = stream.split();
//! let player = speaker.play_media(audio, activity).await?;   // decodes it
//! while let Some(event) = events.recv().await { … }  // Metadata, Stutter…, Finished | Failed
//! ```
//!
//! [`open`] starts one tokio task (it must be called inside the runtime)
//! that resolves playlists (M3U, PLS, HLS: [`playlist`]), follows redirects
//! (at most [`MAX_REDIRECTS`]), asks for ICY metadata and strips it from the
//! audio ([`icy`]), reconnects a dropped connection with `Range: bytes=N-`
//! where the server honours it, and watches for stalls ([`fetch`]). What it
//! yields goes through two bounded channels:
//!
//! - the audio ([`MediaAudio`]): one [`AudioItem::Format`] first (the
//!   decoder's hint, and how much decoded audio to skip for `offset_ms`),
//!   then [`AudioItem::Bytes`] in order, for one decoder. It closes at the
//!   end of the stream, finished or failed. Dropping it stops the fetch.
//!   An MP4 file whose server honours `Range` is [`FormatHint::seekable`]:
//!   the decoder seeks through [`MediaAudio::seek`] (its `moov` may follow
//!   the audio), and its terminal event comes once the decoder let go.
//! - the events ([`MediaEvent`]): ICY metadata, stutters, and exactly one
//!   terminal [`MediaEvent::Finished`] or [`MediaEvent::Failed`], sent after
//!   the last audio byte was queued (so an agent that sees the speaker drain
//!   the audio finds the terminal event already waiting).
//!
//! For the agent: a stream that fails still ends the speaker's source
//! normally (the decoder sees the audio close), so the [`Player`] may say
//! `Finished`: check the events first, a [`MediaEvent::Failed`] is already
//! there by then. Read the events as they come: the fetch waits while their
//! channel is full (metadata is dropped instead). The stutter events say
//! the network stalled, while the speaker may still have audio queued.
//! `offset_ms` is skipped before the speaker sees any audio: the player's
//! own offset counts from there. MPEG-TS (HLS segments or a `.ts` URL)
//! is demuxed here ([`ts`]): the decoder sees the ADTS or MPEG audio inside.
//! Decoding failures (an unknown format) come from the speaker as
//! [`PlayerEvent::Failed`](crate::audio::PlayerEvent::Failed).
//!
//! [`Player`]: crate::audio::Player
//!
//! Memory: at most [`Limits::queue`] pieces of at most [`MAX_PIECE`] bytes
//! wait in the audio channel; playlists are read up to
//! [`Limits::playlist_bytes`]; nothing is stored on disk.
//! [`MediaStream::counters`] counts what sits in the channel, for tests.

pub mod fetch;
pub mod icy;
pub mod playlist;
mod resolve;
pub mod ts;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Redirects followed for one request before it fails.
pub const MAX_REDIRECTS: usize = 5;
/// The largest piece of audio handed on at once; bigger network chunks are
/// split, so the channel's capacity bounds its bytes.
pub const MAX_PIECE: usize = 16 * 1024;

/// The `errorType` of AudioPlayer's `PlaybackFailed`, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaErrorKind {
    /// An unknown error.
    Unknown,
    /// The server refused the request as malformed, unauthorised,
    /// forbidden or not found (4xx), or the URL or playlist is unusable.
    InvalidRequest,
    /// The service could not be reached or stopped answering.
    ServiceUnavailable,
    /// The server accepted the request but failed it (5xx).
    InternalServerError,
    /// Something failed on this device.
    InternalDeviceError,
}

impl MediaErrorKind {
    /// The name AVS expects in `PlaybackFailed.error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaErrorKind::Unknown => "MEDIA_ERROR_UNKNOWN",
            MediaErrorKind::InvalidRequest => "MEDIA_ERROR_INVALID_REQUEST",
            MediaErrorKind::ServiceUnavailable => "MEDIA_ERROR_SERVICE_UNAVAILABLE",
            MediaErrorKind::InternalServerError => "MEDIA_ERROR_INTERNAL_SERVER_ERROR",
            MediaErrorKind::InternalDeviceError => "MEDIA_ERROR_INTERNAL_DEVICE_ERROR",
        }
    }
}

/// What the decoder should expect, from the response and the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatHint {
    /// The `Content-Type` without parameters, lower case (`audio/mpeg`).
    pub mime: Option<String>,
    /// The URL path's extension, lower case (`mp3`, `aac`, `m4a`).
    pub extension: Option<String>,
    /// Decoded audio to drop before playing: the part of `offset_ms` the
    /// fetch could not skip by itself (HLS skips whole segments).
    pub skip_ms: u64,
    /// The file's length, when the server said it.
    pub length: Option<u64>,
    /// The decoder may seek with [`MediaAudio::seek`]: an MP4/M4A file from
    /// a server that honours `Range` (its `moov` may come after the audio).
    pub seekable: bool,
}

/// One item of the audio channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioItem {
    /// Sent once, before the first bytes.
    Format(FormatHint),
    /// The next encoded bytes of the stream, at most [`MAX_PIECE`].
    Bytes(Bytes),
    /// After a [`MediaAudio::seek`]: the bytes that follow start at this
    /// byte of the file; any before it are from the old position.
    Seeked(u64),
}

/// What else happens to a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The stream's ICY `StreamTitle` changed (split at " - " into artist
    /// and title when it has one).
    Metadata {
        /// The title, or the whole StreamTitle.
        title: String,
        /// The artist, when the StreamTitle reads "Artist - Title".
        artist: Option<String>,
    },
    /// No bytes arrived for [`Limits::stall`].
    StutterStarted,
    /// Bytes flow again after a stutter.
    StutterFinished,
    /// The stream ended; every byte was queued.
    Finished,
    /// The stream cannot go on; the audio queued before still plays.
    Failed(MediaErrorKind, String),
}

/// The bounds of one stream.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Pieces waiting in the audio channel (each at most [`MAX_PIECE`]).
    pub queue: usize,
    /// No byte for this long: a stutter.
    pub stall: Duration,
    /// Stalled for this long in all: the stream fails.
    pub give_up: Duration,
    /// Reconnects after dropped connections, for the whole stream.
    pub reconnects: u32,
    /// The largest playlist read.
    pub playlist_bytes: usize,
    /// Playlists within playlists followed.
    pub playlist_depth: u32,
    /// Segments of one HLS playlist taken.
    pub max_segments: usize,
    /// Time to connect and get the response headers.
    pub connect: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue: 16,
            stall: Duration::from_secs(2),
            give_up: Duration::from_secs(20),
            reconnects: 5,
            playlist_bytes: 256 * 1024,
            playlist_depth: 4,
            max_segments: 10_000,
            connect: Duration::from_secs(15),
        }
    }
}

/// Counters of one stream, for tests and the log.
#[derive(Debug, Default)]
pub struct Counters {
    /// Audio bytes in the channel now.
    pub buffered: AtomicUsize,
    /// The most that ever were.
    pub peak_buffered: AtomicUsize,
    /// Audio bytes handed on in all.
    pub delivered: AtomicU64,
    /// HTTP requests made.
    pub requests: AtomicU64,
    /// Reconnects after a dropped connection.
    pub reconnects: AtomicU64,
}

impl Counters {
    fn queued(&self, n: usize) {
        let now = self.buffered.fetch_add(n, Ordering::Relaxed) + n;
        self.peak_buffered.fetch_max(now, Ordering::Relaxed);
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn taken(&self, n: usize) {
        self.buffered.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The client media is fetched with: rustls with the system's trust store
/// plus an optional extra CA, at most [`MAX_REDIRECTS`] redirects.
#[derive(Debug, Clone)]
pub struct MediaClient {
    http: reqwest::Client,
}

impl MediaClient {
    /// A client trusting the system roots and, if given, the PEM CA file
    /// `extra_ca` (a local stand-in's).
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("avsd/", env!("CARGO_PKG_VERSION")))
            // Streams have no end; stalls are watched per read instead.
            .connect_timeout(Duration::from_secs(10));
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read the media CA file {}: {e}; fix the path or remove it",
                    path.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{} is not a PEM CA bundle: {e}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the media HTTP client: {e}"))?;
        Ok(Self { http })
    }
}

/// The audio half of a stream, for one decoder. Dropping it stops the
/// fetch (at its next read or wait).
#[derive(Debug)]
pub struct MediaAudio {
    rx: mpsc::Receiver<AudioItem>,
    seeks: mpsc::Sender<u64>,
    counters: Arc<Counters>,
}

impl MediaAudio {
    /// Asks for the file from byte `pos` on (a [`FormatHint::seekable`]
    /// stream only): an [`AudioItem::Seeked`] marks where those bytes
    /// start. False if the fetch has ended.
    pub async fn seek(&self, pos: u64) -> bool {
        self.seeks.send(pos).await.is_ok()
    }

    /// The next item; `None` at the end of the stream.
    pub async fn recv(&mut self) -> Option<AudioItem> {
        let item = self.rx.recv().await;
        if let Some(AudioItem::Bytes(b)) = &item {
            self.counters.taken(b.len());
        }
        item
    }
}

/// One stream being fetched: see the module docs.
#[derive(Debug)]
pub struct MediaStream {
    audio: MediaAudio,
    events: mpsc::Receiver<MediaEvent>,
}

/// The events a stream's agent reads; bounded, never more than a few.
pub type MediaEvents = mpsc::Receiver<MediaEvent>;

/// Either half, in the order a reader of both wants it (tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaItem {
    /// From the audio channel.
    Audio(AudioItem),
    /// From the event channel.
    Event(MediaEvent),
}

impl MediaStream {
    /// The audio for the speaker and the events for the agent.
    pub fn split(self) -> (MediaAudio, MediaEvents) {
        (self.audio, self.events)
    }

    /// The stream's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.audio.counters.clone()
    }

    /// The next item of either channel: audio first while it flows; the
    /// terminal event comes after the audio closed. `None` once both ended.
    pub async fn next(&mut self) -> Option<MediaItem> {
        tokio::select! {
            biased;
            item = self.audio.recv() => match item {
                Some(item) => Some(MediaItem::Audio(item)),
                None => self.events.recv().await.map(MediaItem::Event),
            },
            Some(event) = self.events.recv() => Some(MediaItem::Event(event)),
        }
    }
}

/// A stream whose bytes are already arriving, such as a Play directive's
/// `cid:` attachment: the same channels as [`open`], with `hint` as its
/// format. Call inside the tokio runtime.
pub fn from_attachment(
    mut attachment: mpsc::Receiver<Bytes>,
    hint: FormatHint,
    limits: &Limits,
) -> MediaStream {
    let (out, stream, _seeks) = channels(limits);
    let mut out = out;
    tokio::spawn(async move {
        let mut result = out.format(hint).await;
        while result.is_ok() {
            tokio::select! {
                biased;
                () = out.closed() => return,
                piece = attachment.recv() => match piece {
                    Some(b) => result = out.bytes(b).await,
                    None => break,
                },
            }
        }
        out.finish(result).await;
    });
    stream
}

/// The two channels of a stream: the fetch's end, the reader's, and the
/// decoder's seeks.
fn channels(limits: &Limits) -> (fetch::Out, MediaStream, mpsc::Receiver<u64>) {
    let (audio_tx, audio_rx) = mpsc::channel(limits.queue.max(1));
    let (event_tx, event_rx) = mpsc::channel(16);
    let (seek_tx, seek_rx) = mpsc::channel(1);
    let counters = Arc::new(Counters::default());
    let out = fetch::Out {
        audio: Some(audio_tx),
        events: event_tx,
        counters: counters.clone(),
        format_sent: false,
        ts: None,
    };
    let stream = MediaStream {
        audio: MediaAudio {
            rx: audio_rx,
            seeks: seek_tx,
            counters,
        },
        events: event_rx,
    };
    (out, stream, seek_rx)
}

/// Starts fetching `url` (https or http; a playlist or the media itself),
/// `offset_ms` into it. Call inside the tokio runtime.
pub fn open(url: &str, offset_ms: u64, client: &MediaClient, limits: Limits) -> MediaStream {
    let (out, stream, seeks) = channels(&limits);
    tokio::spawn(resolve::run(
        url.to_string(),
        offset_ms,
        client.http.clone(),
        limits,
        out,
        seeks,
    ));
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attachment_streams_through_the_same_channels() {
        let (tx, rx) = mpsc::channel(4);
        let hint = FormatHint {
            mime: Some("audio/aac".into()),
            ..FormatHint::default()
        };
        let mut stream = from_attachment(rx, hint.clone(), &Limits::default());
        let big = Bytes::from(vec![7u8; MAX_PIECE + 10]);
        tx.send(Bytes::from_static(b"abc")).await.expect("open");
        tx.send(big.clone()).await.expect("open");
        drop(tx);
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item);
        }
        assert_eq!(
            items,
            [
                MediaItem::Audio(AudioItem::Format(hint)),
                MediaItem::Audio(AudioItem::Bytes(Bytes::from_static(b"abc"))),
                MediaItem::Audio(AudioItem::Bytes(big.slice(..MAX_PIECE))),
                MediaItem::Audio(AudioItem::Bytes(big.slice(MAX_PIECE..))),
                MediaItem::Event(MediaEvent::Finished),
            ]
        );
        assert_eq!(stream.counters().buffered.load(Ordering::Relaxed), 0);
    }
}
