//! Telling AVS: `Speaker.VolumeChanged` and `Speaker.MuteChanged` for the
//! changes the published [`Volume`] marks as unreported, sent while the
//! connection is up, each with the latest value. Changes made while a send
//! is under way or while offline fold into one event with the value they
//! ended at, so after a reconnect AVS hears the latest value once.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Volume, VolumeHandle};
use crate::avs::connection::{ConnectionHandle, ConnectionState, SendError};
use avs_proto::message::Event;

/// How long to wait before trying again after AVS failed (not refused) an
/// event while the connection stayed up.
const RETRY: Duration = Duration::from_secs(5);

/// The event for `name` (`VolumeChanged` or `MuteChanged`): both carry the
/// whole state, as Speaker 1.0 documents, and no context.
pub fn event(name: &str, v: &Volume) -> Event {
    Event::new("Speaker", name).with_payload(json!({ "volume": v.volume, "muted": v.muted }))
}

/// Start the reporter.
pub fn spawn(
    volume: VolumeHandle,
    connection: ConnectionHandle,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(run(volume, connection, shutdown));
}

/// What became of one event.
enum Sent {
    /// AVS has it.
    Delivered,
    /// AVS refused it for good (a 4xx other than 403 and 429): sending it
    /// again would be refused again.
    Refused,
    /// Not now: offline, or AVS failed; try again.
    Later,
}

async fn run(volume: VolumeHandle, connection: ConnectionHandle, shutdown: CancellationToken) {
    let mut state = volume.state();
    let mut link = connection.state();
    loop {
        let v = *state.borrow_and_update();
        let connected = *link.borrow_and_update() == ConnectionState::Connected;
        let mut retry = false;
        if connected && (v.unreported_volume != 0 || v.unreported_mute != 0) {
            let (mut done_volume, mut done_mute) = (0, 0);
            for (number, name, done) in [
                (v.unreported_volume, "VolumeChanged", &mut done_volume),
                (v.unreported_mute, "MuteChanged", &mut done_mute),
            ] {
                if number == 0 {
                    continue;
                }
                match send(&connection, name, &v).await {
                    Sent::Delivered | Sent::Refused => *done = number,
                    Sent::Later => retry = true,
                }
            }
            if (done_volume != 0 || done_mute != 0)
                && volume.reported(done_volume, done_mute).await.is_err()
            {
                // The owner is gone: the daemon is stopping.
                return;
            }
            if !retry {
                // The owner publishes the cleared marks: look again.
                continue;
            }
        }
        let wait_retry = async {
            if retry {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
            changed = link.changed() => if changed.is_err() { return },
            () = wait_retry => {}
        }
    }
}

async fn send(connection: &ConnectionHandle, name: &str, v: &Volume) -> Sent {
    let event = event(name, v);
    match connection.send(event.to_json(), None).await {
        Ok(_) => {
            tracing::debug!(volume = v.volume, muted = v.muted, "Speaker.{name} sent");
            Sent::Delivered
        }
        Err(SendError::Status { status, exception })
            if (400..500).contains(&status) && status != 403 && status != 429 =>
        {
            tracing::error!(
                "AVS refused Speaker.{name} (HTTP {status}{}); not sending it again",
                exception
                    .map(|e| format!(
                        ": {} {}",
                        e.payload.code,
                        e.payload.description.unwrap_or_default()
                    ))
                    .unwrap_or_default()
            );
            Sent::Refused
        }
        Err(e) => {
            tracing::info!("Speaker.{name} waits for AVS: {e}");
            Sent::Later
        }
    }
}
