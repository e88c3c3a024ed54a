//! What the actor looks at while a stream plays: progress reports at
//! their offsets, pauses and resumes (the focus manager's doing), the
//! start of a stutter, and the moment the last sample went out.

use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use super::Actor;
use avs_proto::message::PlayerActivity;

/// How often pause and progress are looked at while a stream plays.
const POLL: Duration = Duration::from_millis(50);
/// The same once the stream is decoded to its end.
const END_POLL: Duration = Duration::from_millis(5);

impl Actor {
    /// When the next progress report is due, else when to look again.
    pub(super) fn deadline(&self) -> Instant {
        let now = Instant::now();
        let Some(c) = self.current.as_ref().filter(|c| c.started && !c.paused) else {
            return now
                + if self.current.is_some() {
                    POLL
                } else {
                    Duration::from_secs(3600)
                };
        };
        let offset = c.offset();
        let due = [c.delay_due, c.next_interval]
            .into_iter()
            .flatten()
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(offset)));
        // Near the end (all decoded, the rest in the ring), look often, to
        // start the next stream as this one's last sample goes out.
        let poll = if c.player.control().finished() {
            END_POLL
        } else {
            POLL
        };
        now + due.map_or(poll, |d| d.min(poll))
    }

    pub(super) async fn tick(&mut self) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        if !c.started {
            return;
        }
        // The mixer handed over its last sample: the next stream starts now,
        // not after the speaker's Finished (two device periods later), so
        // enqueued tracks follow back to back.
        let control = c.player.control();
        if control.ended() && !control.is_stopped() {
            self.finished().await;
            return;
        }
        let mut out: Vec<(&'static str, Value)> = Vec::new();
        let token = c.item.token.clone();
        let offset = c.offset();
        let paused = c.player.control().is_paused();
        if paused != c.paused {
            c.paused = paused;
            let (name, activity) = if paused {
                ("PlaybackPaused", PlayerActivity::Paused)
            } else if c.stutter.is_some() {
                ("PlaybackResumed", PlayerActivity::BufferUnderrun)
            } else {
                ("PlaybackResumed", PlayerActivity::Playing)
            };
            self.state.set(activity);
            out.push((
                name,
                json!({"token": token, "offsetInMilliseconds": offset}),
            ));
        }
        if !paused {
            if let Some(d) = c.delay_due
                && offset >= d
            {
                c.delay_due = None;
                out.push((
                    "ProgressReportDelayElapsed",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                ));
            }
            if let (Some(at), Some(every)) = (c.next_interval, c.item.interval_ms)
                && offset >= at
            {
                c.next_interval = Some((offset / every + 1) * every);
                out.push((
                    "ProgressReportIntervalElapsed",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                ));
            }
            // Stalled, and now the speaker wants audio it does not have.
            if let Some(before) = c.stalled
                && c.stutter.is_none()
                && c.player.underruns() > before
            {
                c.stutter = Some(Instant::now());
                self.state.set(PlayerActivity::BufferUnderrun);
                out.push((
                    "PlaybackStutterStarted",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                ));
            }
        }
        for (name, payload) in out {
            self.send(name, payload).await;
        }
    }
}
