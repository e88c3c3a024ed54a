//! The fetch task: from the Play directive's URL, through playlists, to the
//! media bytes; HLS media playlists segment by segment, live ones reloaded
//! as RFC 8216 §6.3.4 says.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::time::timeout;
use url::Url;

use super::fetch::{Body, Ctx, Failure, Out, accepts_ranges, content_length, get, mime, pump};
use super::playlist::{self, MediaPlaylist, Playlist};
use super::{FormatHint, Limits, MediaErrorKind, ts};

/// Runs one stream to its end and reports how it ended.
pub(super) async fn run(
    url: String,
    offset_ms: u64,
    http: reqwest::Client,
    limits: Limits,
    out: Out,
    seeks: tokio::sync::mpsc::Receiver<u64>,
) {
    let mut ctx = Ctx {
        http,
        seeks,
        reconnects_left: limits.reconnects,
        limits,
        out,
    };
    let result = match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => play(&mut ctx, u, offset_ms, 0).await,
        Ok(u) => Err(Failure::new(
            MediaErrorKind::InvalidRequest,
            format!(
                "`{url}` is a {}: URL; avsd fetches http and https streams",
                u.scheme()
            ),
        )),
        Err(e) => Err(Failure::new(
            MediaErrorKind::InvalidRequest,
            format!("`{url}` is not a URL: {e}"),
        )),
    };
    // The player let go (a Stop): nothing failed.
    if let Err(f) = &result
        && *f != Failure::gone()
    {
        tracing::warn!(
            error = f.message,
            kind = f.kind.as_str(),
            "media stream failed"
        );
    }
    ctx.out.finish(result).await;
}

/// The first chunk of a body, to tell a playlist from media.
async fn first_chunk(ctx: &Ctx, resp: &mut reqwest::Response, url: &Url) -> Result<Bytes, Failure> {
    match timeout(ctx.limits.give_up, resp.chunk()).await {
        Ok(Ok(c)) => Ok(c.unwrap_or_default()),
        Ok(Err(e)) => Err(Failure::new(
            MediaErrorKind::ServiceUnavailable,
            format!("{url}: the connection broke before any data: {e}"),
        )),
        Err(_) => Err(Failure::new(
            MediaErrorKind::ServiceUnavailable,
            format!("{url} sent no data for {:?}", ctx.limits.give_up),
        )),
    }
}

/// Plays `url`, a playlist (`depth` deep) or media.
async fn play(ctx: &mut Ctx, url: Url, offset_ms: u64, depth: u32) -> Result<(), Failure> {
    let mut resp = get(ctx, &url, None).await?;
    let at = resp.url().clone();
    let mime = mime(&resp);
    let first = first_chunk(ctx, &mut resp, &at).await?;
    if !playlist::is_playlist(mime.as_deref(), &at, &first) {
        let extension = playlist::extension(&at);
        let length = content_length(&resp);
        let mp4 = matches!(
            mime.as_deref(),
            Some("audio/mp4" | "audio/x-m4a" | "video/mp4")
        ) || matches!(extension.as_deref(), Some("m4a" | "mp4" | "m4b" | "mov"));
        let seekable = mp4 && length.is_some() && accepts_ranges(&resp);
        let ts = ts::looks_like_ts(mime.as_deref(), extension.as_deref(), &first);
        let hint = FormatHint {
            mime,
            extension,
            skip_ms: offset_ms,
            length,
            seekable: seekable && !ts,
        };
        if ts {
            ctx.out.format_ts(hint).await?;
        } else {
            ctx.out.format(hint).await?;
        }
        let seekable = seekable && !ts;
        return pump(ctx, resp, first, &at, Body::File { seekable }).await;
    }
    if depth >= ctx.limits.playlist_depth {
        return Err(Failure::new(
            MediaErrorKind::InvalidRequest,
            format!(
                "{at}: playlists nest deeper than {}",
                ctx.limits.playlist_depth
            ),
        ));
    }
    let text = read_text(ctx, resp, first, &at).await?;
    let list = playlist::parse(&text, &at, ctx.limits.max_segments)
        .map_err(|e| Failure::new(MediaErrorKind::InvalidRequest, format!("{at}: {e}")))?;
    match list {
        Playlist::Entries(urls) => {
            // Stations list mirrors: the next is tried while nothing played.
            let mut last = None;
            for u in urls {
                match Box::pin(play(ctx, u, offset_ms, depth + 1)).await {
                    Ok(()) => return Ok(()),
                    Err(f) if !ctx.out.started() => {
                        tracing::info!(error = f.message, "playlist entry failed; trying the next");
                        last = Some(f);
                    }
                    Err(f) => return Err(f),
                }
            }
            Err(last.unwrap_or_else(|| {
                Failure::new(
                    MediaErrorKind::InvalidRequest,
                    format!("{at}: empty playlist"),
                )
            }))
        }
        // The first variant is the one RFC 8216 §4.3.4.2 has clients start with.
        Playlist::Variants(v) => match v.into_iter().next() {
            Some((u, _)) => Box::pin(play(ctx, u, offset_ms, depth + 1)).await,
            None => Err(Failure::new(
                MediaErrorKind::InvalidRequest,
                format!("{at}: no variant"),
            )),
        },
        Playlist::Media(m) => hls(ctx, at, m, offset_ms).await,
    }
}

/// A playlist's body, at most `limits.playlist_bytes`.
async fn read_text(
    ctx: &Ctx,
    mut resp: reqwest::Response,
    first: Bytes,
    url: &Url,
) -> Result<String, Failure> {
    let max = ctx.limits.playlist_bytes;
    let mut body = BytesMut::from(&first[..]);
    loop {
        if body.len() > max {
            return Err(Failure::new(
                MediaErrorKind::InvalidRequest,
                format!("{url}: the playlist is larger than {max} bytes"),
            ));
        }
        match timeout(ctx.limits.give_up, resp.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    MediaErrorKind::ServiceUnavailable,
                    format!("{url}: the playlist's connection broke: {e}"),
                ));
            }
            Err(_) => {
                return Err(Failure::new(
                    MediaErrorKind::ServiceUnavailable,
                    format!("{url}: the playlist stalled"),
                ));
            }
        }
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        Failure::new(
            MediaErrorKind::InvalidRequest,
            format!("{url}: the playlist is not UTF-8 text"),
        )
    })
}

/// Plays an HLS media playlist's segments as one stream; reloads a live
/// one until it ends.
async fn hls(
    ctx: &mut Ctx,
    at: Url,
    mut list: MediaPlaylist,
    offset_ms: u64,
) -> Result<(), Failure> {
    let mut skip = offset_ms;
    let mut next = list.segments.first().map_or(0, |s| s.sequence);
    if list.ended {
        // On demand: whole segments are skipped unfetched; the decoder
        // drops the rest of the offset.
        for s in &list.segments {
            let d = s.duration.as_millis() as u64;
            if d > skip {
                break;
            }
            skip -= d;
            next = s.sequence + 1;
        }
    } else {
        // Live: start three target durations from the end (RFC 8216
        // §6.3.3); a live stream has no offset to go back to.
        skip = 0;
        let n = list.segments.len();
        if let Some(s) = list.segments.get(n.saturating_sub(3)) {
            next = s.sequence;
        }
    }
    let mut last_new = Instant::now();
    loop {
        let mut fresh = false;
        let from = next;
        for s in list.segments.iter().filter(|s| s.sequence >= from) {
            let mut resp = get(ctx, &s.url, None).await?;
            let first = first_chunk(ctx, &mut resp, &s.url).await?;
            let hint = FormatHint {
                mime: mime(&resp),
                extension: playlist::extension(&s.url),
                skip_ms: skip,
                ..FormatHint::default()
            };
            if ts::looks_like_ts(hint.mime.as_deref(), hint.extension.as_deref(), &first) {
                ctx.out.format_ts(hint).await?;
            } else {
                ctx.out.format(hint).await?;
            }
            pump(ctx, resp, first, &s.url, Body::Segment).await?;
            next = s.sequence + 1;
            fresh = true;
        }
        if list.ended {
            return Ok(());
        }
        if fresh {
            last_new = Instant::now();
        } else if last_new.elapsed() >= ctx.limits.give_up.max(list.target_duration * 3) {
            return Err(Failure::new(
                MediaErrorKind::ServiceUnavailable,
                format!(
                    "{at}: the live playlist has had no new segment for {:?}",
                    last_new.elapsed()
                ),
            ));
        }
        // A reload that brought nothing waits half as long (RFC 8216 §6.3.4).
        let wait = if fresh {
            list.target_duration
        } else {
            list.target_duration / 2
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
            () = ctx.out.closed() => return Err(Failure::gone()),
        }
        let mut resp = get(ctx, &at, None).await?;
        let first = first_chunk(ctx, &mut resp, &at).await?;
        let text = read_text(ctx, resp, first, &at).await?;
        list = match playlist::parse(&text, &at, ctx.limits.max_segments) {
            Ok(Playlist::Media(m)) => m,
            Ok(_) => {
                return Err(Failure::new(
                    MediaErrorKind::InvalidRequest,
                    format!("{at}: the reloaded playlist is no longer a media playlist"),
                ));
            }
            Err(e) => {
                return Err(Failure::new(
                    MediaErrorKind::InvalidRequest,
                    format!("{at}: {e}"),
                ));
            }
        };
        if let Some(first) = list.segments.first()
            && first.sequence > next
        {
            tracing::info!(%at, missed = first.sequence - next, "fell behind the live playlist");
            next = first.sequence;
        }
    }
}
