//! The alerts' events on their way to AVS: a queue kept in the state
//! directory (`alerts/outbox.json`, written atomically at every change)
//! and one task that sends its head, and only once AVS has taken it
//! removes it. So SetAlertSucceeded, AlertStarted, AlertStopped and the
//! rest reach AVS in the order they happened, after an outage or a
//! restart, each once: an event leaves the file only after AVS answered
//! it, and is never sent twice unless AVS's answer itself was lost.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::avs::connection::{ConnectionHandle, ConnectionState, SendError};
use avs_proto::message::Event;
use kit::fsutil;

/// The file, under the state directory's `alerts/`.
pub const OUTBOX_FILE: &str = "outbox.json";
/// The most events kept: far more than a week offline makes with the
/// store's maximum of alerts. When full, the oldest goes (with a warning).
pub const MAX_QUEUED: usize = 1024;
/// The longest wait between two tries while AVS cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One event waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    /// The event's messageId: what is removed once AVS took it.
    pub message_id: String,
    /// `Alerts.Name`, for the log.
    pub name: String,
    /// The metadata JSON, sent as is.
    pub metadata: String,
}

/// The persisted queue, shared by the alerts actor (which adds) and the
/// sending task (which removes). The lock is never held across an await.
pub struct Outbox {
    path: PathBuf,
    queue: Mutex<VecDeque<Queued>>,
    added: Notify,
}

impl Outbox {
    /// The queue kept in `dir` (what a previous run left is sent first).
    pub fn open(dir: &Path) -> Arc<Outbox> {
        let path = dir.join(OUTBOX_FILE);
        let queue = match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text).unwrap_or_else(|e| {
                tracing::error!(
                    "the alerts' outbox {} is not valid ({e}); its events are lost",
                    path.display()
                );
                VecDeque::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => {
                tracing::error!(
                    "cannot read the alerts' outbox {}: {e}; its events are lost",
                    path.display()
                );
                VecDeque::new()
            }
        };
        if !queue.is_empty() {
            tracing::info!("{} alert events from before wait for AVS", queue.len());
        }
        Arc::new(Outbox {
            path,
            queue: Mutex::new(queue),
            added: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, queue: &VecDeque<Queued>) {
        let written = serde_json::to_vec(queue)
            .map_err(io::Error::other)
            .and_then(|text| fsutil::write_atomic(&self.path, &text));
        if let Err(e) = written {
            tracing::error!(
                "cannot save the alerts' outbox {}: {e}; its events may be lost in a restart",
                self.path.display()
            );
        }
    }

    /// Queues `event` (saved before this returns).
    pub fn push(&self, event: Event) {
        let h = event.header();
        let queued = Queued {
            message_id: h.message_id.clone(),
            name: format!("{}.{}", h.namespace, h.name),
            metadata: event.to_json(),
        };
        let mut queue = self.lock();
        if queue.len() >= MAX_QUEUED
            && let Some(old) = queue.pop_front()
        {
            tracing::warn!(
                "the alerts' outbox is full ({MAX_QUEUED}); dropping the oldest event, {}",
                old.name
            );
        }
        tracing::debug!("queued {} for AVS", queued.name);
        queue.push_back(queued);
        self.save(&queue);
        drop(queue);
        self.added.notify_one();
    }

    /// The oldest event.
    pub fn head(&self) -> Option<Queued> {
        self.lock().front().cloned()
    }

    /// AVS took the event `message_id`: remove it.
    pub fn taken(&self, message_id: &str) {
        let mut queue = self.lock();
        if queue.front().is_some_and(|q| q.message_id == message_id) {
            queue.pop_front();
            self.save(&queue);
        }
    }

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends the outbox's events in order until `shutdown`.
pub async fn run(outbox: Arc<Outbox>, connection: ConnectionHandle, shutdown: CancellationToken) {
    let mut state = connection.state();
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(head) = outbox.head() else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = outbox.added.notified() => continue,
            }
        };
        if *state.borrow_and_update() != ConnectionState::Connected {
            // Sent once the connection is back (SynchronizeState first).
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = state.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = connection.send(head.metadata.clone(), None) => sent,
        };
        match sent {
            Ok(_) => {
                // Logged once it has left the file (tests wait for this).
                outbox.taken(&head.message_id);
                tracing::info!("sent {} to AVS", head.name);
                backoff = Duration::from_secs(1);
                continue;
            }
            // AVS refused this event itself: sending it again would be
            // refused again and hold up every later one.
            Err(SendError::Status { status, .. })
                if (400..500).contains(&status) && status != 403 && status != 429 =>
            {
                tracing::error!(
                    "AVS refused {} (HTTP {status}); dropping it from the outbox",
                    head.name
                );
                outbox.taken(&head.message_id);
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot send {} to AVS yet: {e}; trying again in {backoff:?}",
                    head.name
                );
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_events_survive_reopening_in_order_until_taken() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path());
        let a = Event::new("Alerts", "AlertStarted");
        let b = Event::new("Alerts", "AlertStopped");
        let (ida, idb) = (a.header().message_id.clone(), b.header().message_id.clone());
        outbox.push(a);
        outbox.push(b);
        let again = Outbox::open(dir.path());
        assert_eq!(again.len(), 2);
        assert_eq!(again.head().unwrap().message_id, ida);
        // Only the head is ever taken.
        again.taken(&idb);
        assert_eq!(again.len(), 2);
        again.taken(&ida);
        let third = Outbox::open(dir.path());
        assert_eq!(third.head().unwrap().message_id, idb);
        assert_eq!(third.head().unwrap().name, "Alerts.AlertStopped");
    }
}
