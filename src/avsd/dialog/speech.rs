//! Alexa's spoken answers: the attachments waiting for their `Speak`, and
//! the one answer playing now. Its bytes go from the attachment straight to
//! the speaker's decoder as they arrive, so the first sample does not wait
//! for the whole MP3.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::audio::{AudioError, Player, PlayerEvent, Speaker};
use avs_proto::message::{SpeechActivity, SpeechState};

/// Attachments kept for a Speak that has not run yet. An answer holds one;
/// more only pile up when directives of a dropped dialog leave theirs.
const KEPT_ATTACHMENTS: usize = 8;

/// Attachments by Content-ID, oldest first.
#[derive(Default)]
pub(super) struct Attachments {
    kept: VecDeque<(String, mpsc::Receiver<Bytes>)>,
}

impl Attachments {
    /// Keep `data` for the Speak that names `content_id`.
    pub(super) fn insert(&mut self, content_id: String, data: mpsc::Receiver<Bytes>) {
        if self.kept.len() == KEPT_ATTACHMENTS {
            // Dropping the receiver lets the stream skip the rest of it.
            self.kept.pop_front();
        }
        self.kept.push_back((content_id, data));
    }

    /// Take the attachment named `content_id`, if it has arrived.
    pub(super) fn take(&mut self, content_id: &str) -> Option<mpsc::Receiver<Bytes>> {
        let at = self.kept.iter().position(|(id, _)| id == content_id)?;
        self.kept.remove(at).map(|(_, data)| data)
    }

    /// Forget them all (Stop, or a new dialog).
    pub(super) fn clear(&mut self) {
        self.kept.clear();
    }
}

/// The answer playing now.
pub(super) struct Speaking {
    /// The Speak's token, echoed in events and the context.
    pub token: String,
    player: Player,
    /// The first sample reached the device.
    pub started: bool,
}

/// What happened to the answer playing now.
pub(super) enum Progress {
    /// The player reported this.
    Player(PlayerEvent),
    /// The player is gone without a final event (it always sends one; this
    /// only guards the loop).
    Gone,
}

impl Speaking {
    /// Play the Speak with `token` on the speaker; its MP3 goes from `feed`
    /// straight to the speaker's decoder, not through the dialog.
    pub(super) async fn start(
        speaker: &Result<Speaker, AudioError>,
        token: String,
        feed: mpsc::Receiver<Bytes>,
    ) -> Result<Speaking, AudioError> {
        let player = speaker.as_ref().map_err(Clone::clone)?.speak(feed).await?;
        Ok(Speaking {
            token,
            player,
            started: false,
        })
    }

    /// Wait for the player's next event. Cancel-safe, for the dialog's `select!`.
    pub(super) async fn next(&mut self) -> Progress {
        match self.player.next_event().await {
            Some(event) => Progress::Player(event),
            None => Progress::Gone,
        }
    }

    /// The SpeechSynthesizer context now.
    pub(super) fn state(&self, activity: SpeechActivity) -> SpeechState {
        SpeechState {
            token: self.token.clone(),
            offset_in_milliseconds: self.player.offset_ms(),
            player_activity: activity,
        }
    }

    /// Silence it at once.
    pub(super) fn stop(&mut self) {
        self.player.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_found_by_id_and_the_oldest_go_first() {
        let mut kept = Attachments::default();
        let mut senders = Vec::new();
        for i in 0..KEPT_ATTACHMENTS + 1 {
            let (tx, rx) = mpsc::channel(1);
            senders.push(tx);
            kept.insert(format!("cid{i}"), rx);
        }
        assert!(kept.take("cid0").is_none(), "the oldest was dropped");
        assert!(senders[0].is_closed());
        assert!(kept.take("cid3").is_some());
        assert!(kept.take("cid3").is_none(), "taken once");
        kept.clear();
        assert!(kept.take("cid5").is_none());
    }
}
