//! Starting and ending streams: the head of the queue starts when its
//! bytes can be had, and each stream ends once, as PlaybackFinished,
//! PlaybackStopped or PlaybackFailed.

use std::time::SystemTime;

use serde_json::json;
use tokio::time::Instant;

use super::super::directive::InterruptedBehavior;
use super::super::stream::{self, MediaError, MediaErrorKind};
use super::item::{Current, Item};
use super::{ATTACHMENT_WAIT, Actor};
use crate::audio::focus::{Backgrounded, Channel};
use crate::audio::{Activity, PlayerEvent};
use crate::media::MediaStream;
use avs_proto::message::PlayerActivity;

impl Actor {
    /// Starts the head of the queue, if its bytes can be had.
    pub(super) async fn next(&mut self) {
        while self.current.is_none() {
            let Some(item) = self.queue.front() else {
                return;
            };
            // A cid: item waits for its attachment, which follows the Play.
            if let Some(cid) = item.url.strip_prefix("cid:")
                && !self.kept.contains_key(cid)
            {
                self.attachment_due
                    .get_or_insert_with(|| Instant::now() + ATTACHMENT_WAIT);
                return;
            }
            self.attachment_due = None;
            let Some(item) = self.queue.pop_front() else {
                return;
            };
            if item.expiry.is_some_and(|e| e <= SystemTime::now()) {
                let error = MediaError::new(
                    MediaErrorKind::InvalidRequest,
                    format!("the stream expired before it could play ({})", item.url),
                );
                self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
                    .await;
                continue;
            }
            let opened = match item.url.strip_prefix("cid:") {
                Some(cid) => match self.kept.remove(cid) {
                    Some(kept) => stream::open_kept(kept, item.offset_ms),
                    None => continue,
                },
                None => match &self.media {
                    Ok(client) => stream::open(client, &item.url, item.offset_ms),
                    Err(e) => {
                        let error = MediaError::new(MediaErrorKind::InternalDeviceError, e.clone());
                        self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
                            .await;
                        continue;
                    }
                },
            };
            self.start(item, opened).await;
        }
    }

    async fn start(&mut self, item: Item, opened: MediaStream) {
        let activity = Activity {
            channel: Channel::Content,
            interface: "AudioPlayer",
            backgrounded: match item.interrupted {
                InterruptedBehavior::Attenuate => Backgrounded::Duck,
                InterruptedBehavior::Pause => Backgrounded::Pause,
            },
            gain: 1.0,
        };
        let speaker = match &self.speaker {
            Ok(s) => s.clone(),
            Err(e) => {
                let error = MediaError::new(MediaErrorKind::InternalDeviceError, e.to_string());
                self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
                    .await;
                return;
            }
        };
        let (audio, events) = opened.split();
        // The media skips `offset_ms` before the speaker sees audio: the
        // speaker's own offset counts from there.
        match speaker.play_media(audio, activity).await {
            Ok(player) => {
                let rate = player.output_format().rate;
                self.state.playing(
                    &item.token,
                    item.offset_ms,
                    Some((player.control().clone(), rate)),
                    &item.metadata,
                );
                let delay_due = item.delay_ms.filter(|&d| d > item.offset_ms);
                let next_interval = item.interval_ms.map(|i| (item.offset_ms / i + 1) * i);
                self.current = Some(Current {
                    item,
                    player,
                    events: Some(events),
                    failure: None,
                    started: false,
                    body_done: false,
                    nearly_sent: false,
                    delay_due,
                    next_interval,
                    paused: false,
                    stalled: None,
                    stutter: None,
                    early_metadata: None,
                });
            }
            Err(e) => {
                let error = MediaError::new(MediaErrorKind::InternalDeviceError, e.to_string());
                self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
                    .await;
            }
        }
    }

    pub(super) async fn player_event(&mut self, event: Option<PlayerEvent>) {
        match event {
            Some(PlayerEvent::Started) => {
                let Some(c) = self.current.as_mut() else {
                    return;
                };
                c.started = true;
                let (token, offset) = (c.item.token.clone(), c.item.offset_ms);
                let early = c.early_metadata.take();
                self.send(
                    "PlaybackStarted",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                )
                .await;
                if let Some(metadata) = early {
                    self.send(
                        "StreamMetadataExtracted",
                        json!({"token": token, "metadata": metadata}),
                    )
                    .await;
                }
                self.nearly_finished().await;
            }
            Some(PlayerEvent::Finished) => self.finished().await,
            Some(PlayerEvent::Failed(e)) => {
                let Some(mut c) = self.current.take() else {
                    return;
                };
                let offset = c.offset();
                // The fetch's failure explains the decoder's, if there is one.
                let error = c.settle().unwrap_or_else(|| {
                    MediaError::new(MediaErrorKind::InternalDeviceError, e.to_string())
                });
                let was = if c.started {
                    PlayerActivity::Playing
                } else {
                    PlayerActivity::Idle
                };
                self.state.set(PlayerActivity::Stopped);
                self.failed(&c.item, offset, was, &error).await;
                self.next().await;
            }
            // Stopped comes after our own stop, which already reported.
            Some(PlayerEvent::Stopped) | None => {
                if let Some(c) = self.current.take() {
                    let offset = c.offset();
                    self.state.set(PlayerActivity::Stopped);
                    self.send(
                        "PlaybackStopped",
                        json!({"token": c.item.token, "offsetInMilliseconds": offset}),
                    )
                    .await;
                    self.next().await;
                }
            }
        }
    }

    /// The head of the queue never got its attachment: it fails, and the
    /// queue moves on.
    pub(super) async fn attachment_missing(&mut self) {
        self.attachment_due = None;
        let waiting = self.queue.front().and_then(|i| i.url.strip_prefix("cid:"));
        if self.current.is_some() || waiting.is_none_or(|cid| self.kept.contains_key(cid)) {
            return;
        }
        let Some(item) = self.queue.pop_front() else {
            return;
        };
        let error = MediaError::new(
            MediaErrorKind::InvalidRequest,
            format!(
                "the attachment {} did not arrive within {} s of its Play",
                item.url,
                ATTACHMENT_WAIT.as_secs()
            ),
        );
        self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
            .await;
        self.next().await;
    }

    /// The stream played to its end: PlaybackFinished (or PlaybackFailed
    /// if its fetch broke off), and the next one starts.
    pub(super) async fn finished(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        if let Some(error) = c.settle() {
            let offset = c.offset();
            self.state.set(PlayerActivity::Stopped);
            self.failed(&c.item, offset, PlayerActivity::Playing, &error)
                .await;
        } else {
            // The decoder reached the end, so the whole body arrived.
            c.body_done = true;
            self.current = Some(c);
            self.nearly_finished().await;
            let Some(c) = self.current.take() else {
                return;
            };
            let offset = c.offset();
            self.state.set(PlayerActivity::Finished);
            self.send(
                "PlaybackFinished",
                json!({"token": c.item.token, "offsetInMilliseconds": offset}),
            )
            .await;
        }
        self.next().await;
    }

    /// PlaybackNearlyFinished once the stream has started and all of it
    /// has arrived: the device is ready to fetch the next one.
    pub(super) async fn nearly_finished(&mut self) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        if c.nearly_sent || !c.started || !c.body_done {
            return;
        }
        c.nearly_sent = true;
        let payload = json!({"token": c.item.token, "offsetInMilliseconds": c.offset()});
        self.send("PlaybackNearlyFinished", payload).await;
    }

    /// Stops the stream playing, with PlaybackStopped if it had started.
    pub(super) async fn stop_current(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        let offset = c.offset();
        c.player.stop();
        self.state.set(PlayerActivity::Stopped);
        if c.started {
            self.send(
                "PlaybackStopped",
                json!({"token": c.item.token, "offsetInMilliseconds": offset}),
            )
            .await;
        }
    }
}
