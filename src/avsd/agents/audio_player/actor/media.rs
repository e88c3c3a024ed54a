//! The media stream's events, as AudioPlayer events: metadata, stutters
//! (the network stalled and the speaker ran dry), and how the fetch ended.

use serde_json::json;

use super::super::stream::MediaError;
use super::Actor;
use crate::media::MediaEvent;
use avs_proto::message::PlayerActivity;

impl Actor {
    /// One event of the playing stream's media; `None`: its channel closed.
    pub(super) async fn media_event(&mut self, event: Option<MediaEvent>) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        let token = c.item.token.clone();
        match event {
            None => c.events = None,
            Some(MediaEvent::Metadata { title, artist }) => {
                let mut metadata = serde_json::Map::new();
                metadata.insert("title".into(), title.into());
                if let Some(artist) = artist {
                    metadata.insert("artist".into(), artist.into());
                }
                if !c.started {
                    c.early_metadata = Some(metadata.into());
                    return;
                }
                self.send(
                    "StreamMetadataExtracted",
                    json!({"token": token, "metadata": metadata}),
                )
                .await;
            }
            Some(MediaEvent::StutterStarted) => {
                // The network stalled; playback stutters only once the
                // speaker has played what came (AVS: a buffer underrun),
                // which `tick` watches for.
                c.stalled = Some(c.player.underruns());
            }
            Some(MediaEvent::StutterFinished) => {
                c.stalled = None;
                let Some(since) = c.stutter.take() else {
                    return;
                };
                let offset = c.offset();
                let paused = c.paused;
                self.state.set(if paused {
                    PlayerActivity::Paused
                } else {
                    PlayerActivity::Playing
                });
                let took = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.send(
                    "PlaybackStutterFinished",
                    json!({"token": token, "offsetInMilliseconds": offset,
                           "stutterDurationInMilliseconds": took}),
                )
                .await;
            }
            Some(MediaEvent::Finished) => {
                c.body_done = true;
                self.nearly_finished().await;
            }
            Some(MediaEvent::Failed(kind, message)) => {
                let error = MediaError::new(kind, message);
                if c.started {
                    // What was fetched still plays out; the item then fails.
                    c.failure = Some(error);
                    return;
                }
                // Nothing played at all: it fails now.
                if let Some(mut c) = self.current.take() {
                    c.player.stop();
                    self.state.set(PlayerActivity::Stopped);
                    self.failed(&c.item, c.item.offset_ms, PlayerActivity::Idle, &error)
                        .await;
                }
                self.next().await;
            }
        }
    }
}
