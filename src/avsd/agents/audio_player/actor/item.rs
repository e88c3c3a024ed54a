//! What the actor holds: the items queued and the one playing.

use std::time::SystemTime;

use tokio::time::Instant;

use super::super::directive::{InterruptedBehavior, Metadata, Play};
use super::super::stream::MediaError;
use crate::audio::Player;
use crate::media::{MediaEvent, MediaEvents};

/// A stream waiting in the queue.
pub(super) struct Item {
    pub(super) token: String,
    pub(super) url: String,
    pub(super) offset_ms: u64,
    pub(super) expiry: Option<SystemTime>,
    pub(super) delay_ms: Option<u64>,
    pub(super) interval_ms: Option<u64>,
    pub(super) metadata: Metadata,
    pub(super) interrupted: InterruptedBehavior,
}

impl Item {
    pub(super) fn from_play(play: &Play) -> Self {
        let s = &play.audio_item.stream;
        let report = s.progress_report.unwrap_or_default();
        Self {
            token: s.token.clone(),
            url: s.url.clone(),
            offset_ms: s.offset_in_milliseconds,
            expiry: play.expiry(),
            delay_ms: report
                .progress_report_delay_in_milliseconds
                .filter(|&d| d > 0),
            interval_ms: report
                .progress_report_interval_in_milliseconds
                .filter(|&i| i > 0),
            metadata: play.audio_item.metadata.clone().unwrap_or_default(),
            interrupted: play.interrupted_behavior,
        }
    }
}

/// The stream playing.
pub(super) struct Current {
    pub(super) item: Item,
    pub(super) player: Player,
    /// The media stream's events; `None` once its channel closed.
    pub(super) events: Option<MediaEvents>,
    /// The stream failed: what was fetched plays out, then the item fails.
    pub(super) failure: Option<MediaError>,
    pub(super) started: bool,
    /// Every byte of the stream was fetched.
    pub(super) body_done: bool,
    pub(super) nearly_sent: bool,
    pub(super) delay_due: Option<u64>,
    pub(super) next_interval: Option<u64>,
    pub(super) paused: bool,
    /// The network stalled (the media module said so), and the speaker's
    /// underrun count then: a stutter starts when the speaker runs dry.
    pub(super) stalled: Option<u64>,
    /// Since when playback has stuttered (the buffer ran dry in a stall).
    pub(super) stutter: Option<Instant>,
    /// Metadata found before the first sample played: sent after
    /// PlaybackStarted (AVS takes events of a started stream only).
    pub(super) early_metadata: Option<serde_json::Value>,
}

impl Current {
    /// Where the stream is: the speaker counts from the Play's offset,
    /// which the media module skipped before any audio reached it.
    pub(super) fn offset(&self) -> u64 {
        self.item.offset_ms + self.player.offset_ms()
    }

    /// Takes the events already waiting without sending any: the speaker
    /// drained the stream, and the terminal event was sent before its
    /// last byte, so whether it failed is known now.
    pub(super) fn settle(&mut self) -> Option<MediaError> {
        while let Some(events) = self.events.as_mut() {
            match events.try_recv() {
                Ok(MediaEvent::Finished) => self.body_done = true,
                Ok(MediaEvent::Failed(kind, message)) => {
                    self.failure = Some(MediaError::new(kind, message));
                }
                Ok(_) => {}
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => self.events = None,
            }
        }
        self.failure.clone()
    }
}
