//! One HTTP body to the stream's channels: the request (ICY asked for,
//! statuses mapped to AVS's error types), stall watching (stutter events),
//! reconnects with `Range` after a dropped connection, ICY and ID3 removal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use tokio::sync::mpsc;
use tokio::time::timeout;
use url::Url;

use super::icy::{Demuxer, split_title};
use super::ts::TsDemuxer;
use super::{AudioItem, Counters, FormatHint, Limits, MAX_PIECE, MediaErrorKind, MediaEvent};

/// Why a stream stops: the error type for `PlaybackFailed` and a message
/// that names the URL and what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The documented error type.
    pub kind: MediaErrorKind,
    /// What failed.
    pub message: String,
}

impl Failure {
    pub(super) fn new(kind: MediaErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Nobody reads the stream any more; not reported.
    pub(super) fn gone() -> Self {
        Self::new(MediaErrorKind::Unknown, "the stream's reader is gone")
    }
}

/// The stream's two channels, seen from the fetch task.
pub(super) struct Out {
    pub(super) audio: Option<mpsc::Sender<AudioItem>>,
    pub(super) events: mpsc::Sender<MediaEvent>,
    pub(super) counters: Arc<Counters>,
    pub(super) format_sent: bool,
    /// The bytes are MPEG-TS: demuxed here, the decoder sees the audio
    /// inside (its hint waits until the PMT names the codec).
    pub(super) ts: Option<(TsDemuxer, Option<FormatHint>)>,
}

impl Out {
    /// Whether any audio went out (a later failure can no longer fall back
    /// to another playlist entry).
    pub(super) fn started(&self) -> bool {
        self.counters.delivered.load(Ordering::Relaxed) > 0
    }

    /// The decoder's hint, once, before the first bytes.
    pub(super) async fn format(&mut self, hint: FormatHint) -> Result<(), Failure> {
        if self.format_sent {
            return Ok(());
        }
        self.format_sent = true;
        self.send(AudioItem::Format(hint)).await
    }

    async fn send(&mut self, item: AudioItem) -> Result<(), Failure> {
        let audio = self.audio.as_ref().ok_or_else(Failure::gone)?;
        audio.send(item).await.map_err(|_| Failure::gone())
    }

    /// Resolves once the reader of the audio is gone.
    pub(super) async fn closed(&self) {
        match &self.audio {
            Some(a) => a.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Marks where the bytes after a seek start.
    pub(super) async fn seeked(&mut self, pos: u64) -> Result<(), Failure> {
        self.send(AudioItem::Seeked(pos)).await
    }

    /// The decoder's hint for an MPEG-TS body: from here on the bytes
    /// are demuxed, and the hint goes out with the codec the PMT names.
    pub(super) async fn format_ts(&mut self, hint: FormatHint) -> Result<(), Failure> {
        if self.ts.is_none() {
            let pending = (!self.format_sent).then_some(hint);
            self.format_sent = true;
            self.ts = Some((TsDemuxer::new(), pending));
        }
        Ok(())
    }

    /// Hands on `data` (demuxed first if it is MPEG-TS).
    pub(super) async fn bytes(&mut self, data: Bytes) -> Result<(), Failure> {
        let Some((demuxer, pending)) = &mut self.ts else {
            return self.pieces(data).await;
        };
        let mut audio = BytesMut::new();
        demuxer
            .feed(&data, &mut audio)
            .map_err(|e| Failure::new(MediaErrorKind::InvalidRequest, e))?;
        if audio.is_empty() {
            return Ok(());
        }
        if let Some(mut hint) = pending.take() {
            if let Some(codec) = demuxer.audio() {
                let (mime, extension) = codec.hint();
                hint.mime = Some(mime.to_string());
                hint.extension = Some(extension.to_string());
            }
            self.send(AudioItem::Format(hint)).await?;
        }
        self.pieces(audio.freeze()).await
    }

    /// Hands on `data` in pieces of at most [`MAX_PIECE`], waiting for room.
    async fn pieces(&mut self, mut data: Bytes) -> Result<(), Failure> {
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(MAX_PIECE));
            let n = piece.len();
            // Counted before it is queued, so the reader never takes more
            // than was counted.
            self.counters.queued(n);
            if let Err(e) = self.send(AudioItem::Bytes(piece)).await {
                self.counters.taken(n);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends an event; a full channel drops metadata rather than stall
    /// the audio (the next title comes soon enough).
    pub(super) async fn event(&self, event: MediaEvent) {
        if let MediaEvent::Metadata { .. } = event {
            if self.events.try_send(event).is_err() {
                tracing::debug!("stream metadata dropped: nobody reads the events");
            }
        } else {
            let _ = self.events.send(event).await;
        }
    }

    /// Closes the audio, then sends the terminal event.
    pub(super) async fn finish(mut self, result: Result<(), Failure>) {
        self.audio = None;
        let event = match result {
            Ok(()) => MediaEvent::Finished,
            Err(f) if f == Failure::gone() => return,
            Err(f) => MediaEvent::Failed(f.kind, f.message),
        };
        let _ = self.events.send(event).await;
    }
}

/// What one stream's fetches share.
pub(super) struct Ctx {
    pub(super) http: reqwest::Client,
    pub(super) limits: Limits,
    pub(super) out: Out,
    pub(super) reconnects_left: u32,
    /// The decoder's seeks (a seekable file only).
    pub(super) seeks: mpsc::Receiver<u64>,
}

/// The response's type without parameters, lower case.
pub(super) fn mime(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let m = v.split(';').next()?.trim().to_ascii_lowercase();
    (!m.is_empty()).then_some(m)
}

/// GETs `url` (from byte `from` on, if given) and checks the status.
pub(super) async fn get(
    ctx: &Ctx,
    url: &Url,
    from: Option<u64>,
) -> Result<reqwest::Response, Failure> {
    let mut req = ctx.http.get(url.clone()).header("Icy-MetaData", "1");
    if let Some(n) = from {
        req = req.header(RANGE, format!("bytes={n}-"));
    }
    ctx.out.counters.requests.fetch_add(1, Ordering::Relaxed);
    let resp = match timeout(ctx.limits.connect, req.send()).await {
        Err(_) => {
            return Err(Failure::new(
                MediaErrorKind::ServiceUnavailable,
                format!("{url} did not answer within {:?}", ctx.limits.connect),
            ));
        }
        Ok(Err(e)) => return Err(request_failure(url, &e)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let kind = match status {
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS => MediaErrorKind::ServiceUnavailable,
        s if s.is_server_error() => MediaErrorKind::InternalServerError,
        s if s.is_client_error() => MediaErrorKind::InvalidRequest,
        _ => MediaErrorKind::Unknown,
    };
    Err(Failure::new(
        kind,
        format!("{} answered {status}", resp.url()),
    ))
}

fn request_failure(url: &Url, e: &reqwest::Error) -> Failure {
    // reqwest's Display hides the cause (TLS, refused, DNS): walk the chain.
    let mut message = format!("cannot fetch {url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    let kind = if e.is_redirect() || e.is_builder() {
        MediaErrorKind::InvalidRequest
    } else {
        MediaErrorKind::ServiceUnavailable
    };
    Failure::new(kind, message)
}

/// Drops the ID3v2 tag at the start of an HLS packed-audio segment (its
/// timestamp), which would sit between two frames of the stream.
#[derive(Debug, Default)]
pub struct Id3Skip {
    head: BytesMut,
    skip: usize,
    done: bool,
}

impl Id3Skip {
    /// The part of `data` after the tag.
    pub fn feed(&mut self, mut data: Bytes) -> Bytes {
        if self.done {
            return data;
        }
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            data.advance(n);
            self.skip -= n;
            if self.skip == 0 {
                self.done = true;
            }
            return data;
        }
        let need = 10 - self.head.len();
        let n = need.min(data.len());
        self.head.extend_from_slice(&data.split_to(n));
        if self.head.len() < 10 && data.is_empty() {
            if !b"ID3".starts_with(&self.head[..self.head.len().min(3)]) {
                self.done = true;
                return self.head.split().freeze();
            }
            return Bytes::new();
        }
        let h = &self.head;
        if &h[..3] != b"ID3" {
            self.done = true;
            let mut all = self.head.split();
            all.extend_from_slice(&data);
            return all.freeze();
        }
        // A synchsafe size: seven bits a byte; a footer adds ten bytes.
        let size = h[6..10]
            .iter()
            .fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7f));
        self.skip = size + if h[5] & 0x10 != 0 { 10 } else { 0 };
        self.head.clear();
        if self.skip == 0 {
            self.done = true;
            return data;
        }
        self.feed(data)
    }
}

/// What a body is, for [`pump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// A file or live stream; `seekable` if the decoder may seek in it.
    File {
        /// See [`super::FormatHint::seekable`].
        seekable: bool,
    },
    /// An HLS segment (its leading ID3 tag is dropped).
    Segment,
}

/// Streams `resp`'s body (of `url`; `first` already read from it) into the
/// audio channel until it ends: stutters while it stalls, reconnects when
/// the connection drops, strips ICY metadata (reported) and, for an HLS
/// segment, the leading ID3 tag. A seekable file serves the decoder's
/// seeks, until the decoder lets go.
pub(super) async fn pump(
    ctx: &mut Ctx,
    mut resp: reqwest::Response,
    first: Bytes,
    url: &Url,
    body: Body,
) -> Result<(), Failure> {
    let seekable = body == (Body::File { seekable: true });
    let total = content_length(&resp);
    let mut ranges = accepts_ranges(&resp);
    let mut icy = metaint(&resp).map(Demuxer::new);
    let mut id3 = (body == Body::Segment).then(Id3Skip::default);
    let mut title = String::new();
    // The file's byte the next one received is.
    let mut received = 0u64;
    let mut stalled_since: Option<Instant> = None;
    let mut pending = (!first.is_empty()).then_some(first);
    loop {
        let chunk = match pending.take() {
            Some(c) => Ok(Some(c)),
            None => tokio::select! {
                biased;
                () = ctx.out.closed() => return Err(Failure::gone()),
                Some(pos) = ctx.seeks.recv(), if seekable => {
                    resp = seek(ctx, url, pos).await?;
                    received = pos;
                    stalled_since = None;
                    continue;
                }
                r = timeout(ctx.limits.stall, resp.chunk()) => match r {
                    Ok(r) => r,
                    Err(_) => {
                        let since = match stalled_since {
                            Some(since) => since,
                            None => {
                                tracing::info!(%url, "the stream stalls");
                                ctx.out.event(MediaEvent::StutterStarted).await;
                                *stalled_since.insert(Instant::now() - ctx.limits.stall)
                            }
                        };
                        if since.elapsed() >= ctx.limits.give_up {
                            return Err(Failure::new(
                                MediaErrorKind::ServiceUnavailable,
                                format!(
                                    "no audio came from {url} for {:?}; the stream stalled",
                                    ctx.limits.give_up
                                ),
                            ));
                        }
                        continue;
                    }
                },
            },
        };
        let dropped = match chunk {
            Ok(Some(data)) => {
                if stalled_since.take().is_some() {
                    tracing::info!(%url, "the stream flows again");
                    ctx.out.event(MediaEvent::StutterFinished).await;
                }
                received += data.len() as u64;
                let data = match &mut id3 {
                    Some(skip) => skip.feed(data),
                    None => data,
                };
                match &mut icy {
                    None => ctx.out.bytes(data).await?,
                    Some(d) => {
                        let mut audio = Vec::new();
                        let titles = d.feed(data, &mut audio);
                        for a in audio {
                            ctx.out.bytes(a).await?;
                        }
                        for t in titles {
                            if !t.is_empty() && t != title {
                                let (name, artist) = split_title(&t);
                                ctx.out
                                    .event(MediaEvent::Metadata {
                                        title: name,
                                        artist,
                                    })
                                    .await;
                                title = t;
                            }
                        }
                    }
                }
                continue;
            }
            Ok(None) if total.is_none_or(|t| received >= t) => {
                if !seekable {
                    return Ok(());
                }
                // The decoder may still seek back (to the audio, once it
                // has read an MP4's trailing moov): serve it until it lets go.
                tokio::select! {
                    () = ctx.out.closed() => return Ok(()),
                    Some(pos) = ctx.seeks.recv() => {
                        resp = seek(ctx, url, pos).await?;
                        received = pos;
                        continue;
                    }
                }
            }
            Ok(None) => format!("the connection closed after {received} of {total:?} bytes"),
            Err(e) => format!("the connection broke after {received} bytes: {e}"),
        };
        if ctx.reconnects_left == 0 {
            return Err(Failure::new(
                MediaErrorKind::ServiceUnavailable,
                format!("{url}: {dropped}, and the reconnects are used up"),
            ));
        }
        ctx.reconnects_left -= 1;
        ctx.out.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%url, "{dropped}; reconnecting");
        if total.is_some() {
            // A file: resume where it broke, or give up (starting over
            // would play its beginning again).
            if !ranges {
                return Err(Failure::new(
                    MediaErrorKind::ServiceUnavailable,
                    format!(
                        "{url}: {dropped}, and the server does not resume downloads (no Accept-Ranges: bytes)"
                    ),
                ));
            }
            resp = resume(ctx, url, received, &dropped).await?;
        } else {
            // A live stream has no place to resume: join it again.
            let again = get(ctx, url, None).await?;
            icy = metaint(&again).map(Demuxer::new);
            ranges = accepts_ranges(&again);
            resp = again;
        }
    }
}

/// The file from byte `from` on, or why not.
async fn resume(ctx: &Ctx, url: &Url, from: u64, why: &str) -> Result<reqwest::Response, Failure> {
    let again = get(ctx, url, Some(from)).await?;
    if again.status() != StatusCode::PARTIAL_CONTENT || range_start(&again) != Some(from) {
        return Err(Failure::new(
            MediaErrorKind::ServiceUnavailable,
            format!(
                "{url}: {why}, and the server did not resume at byte {from} (answered {})",
                again.status()
            ),
        ));
    }
    Ok(again)
}

/// Serves a decoder's seek: the file from `pos`, marked in the channel.
async fn seek(ctx: &mut Ctx, url: &Url, pos: u64) -> Result<reqwest::Response, Failure> {
    tracing::debug!(%url, pos, "the decoder seeks");
    let resp = resume(ctx, url, pos, "the decoder seeks").await?;
    ctx.out.seeked(pos).await?;
    Ok(resp)
}

/// The `Content-Length` header: reqwest's own `content_length()` shrinks
/// as the body is read.
pub(super) fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(super) fn accepts_ranges(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("bytes"))
}

/// The first byte of a 206's `Content-Range: bytes FIRST-LAST/TOTAL`.
fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn metaint(resp: &reqwest::Response) -> Option<usize> {
    let v = resp.headers().get("icy-metaint")?.to_str().ok()?;
    v.trim().parse().ok().filter(|&n| n > 0 && n <= 1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_id3_tag_is_dropped_in_any_pieces() {
        let mut seg = b"ID3\x04\x00\x00\x00\x00\x00\x05abcde".to_vec();
        seg.extend(b"\xff\xf1AUDIO");
        for piece in [1, 2, 9, 11, 100] {
            let mut skip = Id3Skip::default();
            let out: Vec<u8> = seg
                .chunks(piece)
                .flat_map(|c| skip.feed(Bytes::copy_from_slice(c)).to_vec())
                .collect();
            assert_eq!(out, b"\xff\xf1AUDIO", "pieces of {piece}");
        }
        let mut skip = Id3Skip::default();
        assert_eq!(
            skip.feed(Bytes::from_static(b"\xff\xf1AUDIOAUDIO")),
            &b"\xff\xf1AUDIOAUDIO"[..]
        );
    }
}
