//! The events the actor sends: built here, queued without waiting, sent
//! in order by one task.

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::stream::MediaError;
use super::item::Item;
use super::{Actor, OUTBOX};
use crate::avs::connection::ConnectionHandle;
use avs_proto::message::{Event, PlayerActivity};

impl Actor {
    /// PlaybackFailed for `item`, which was `activity` at `offset`.
    pub(super) async fn failed(
        &mut self,
        item: &Item,
        offset: u64,
        activity: PlayerActivity,
        error: &MediaError,
    ) {
        tracing::warn!(token = item.token, error = %error, "stream failed");
        let payload = json!({
            "token": item.token,
            "currentPlaybackState": {
                "token": item.token,
                "offsetInMilliseconds": offset,
                "playerActivity": activity,
            },
            "error": {"type": error.kind.as_str(), "message": error.message},
        });
        self.send("PlaybackFailed", payload).await;
    }

    /// An AudioPlayer event (none of them carries context).
    pub(super) async fn send(&mut self, name: &str, payload: Value) {
        tracing::debug!(name, "AudioPlayer event");
        let event = Event::new("AudioPlayer", name).with_payload(payload);
        self.post(event.to_json()).await;
    }

    /// Queue an event for AVS. Never waits: while AVS cannot be reached
    /// the sender waits for the link, and the player must go on (and the
    /// router behind it must not stall), so an event past a full outbox
    /// is dropped and logged.
    pub(super) async fn post(&mut self, metadata: String) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        match outbox.try_send(metadata) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "{OUTBOX} AudioPlayer events wait for AVS already; dropping one (is AVS reachable?)"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.outbox = None,
        }
    }
}

/// Sends the player's events one at a time, in order.
pub(super) async fn send_events(
    connection: ConnectionHandle,
    mut rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let metadata = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if let Err(e) = connection.send(metadata, None).await {
            tracing::warn!("cannot send an AudioPlayer event to AVS: {e}");
        }
    }
}
