//! Audio focus: who may be heard, and how loudly, when several things want
//! the speaker at once.
//!
//! This follows the AVS interaction model ("About the AVS Interaction Model"
//! and "Focus Management" on developer.amazon.com): audio belongs to one of
//! four channels, in priority order Dialog > Communications > Alerts >
//! Content. An activity (Alexa's answer, an alarm, a song) acquires its
//! channel. The highest channel in use is in the *foreground*; every lower
//! one goes to the *background*, where the activity either keeps playing
//! attenuated ([`Backgrounded::Duck`], e.g. music under Alexa's voice), waits
//! ([`Backgrounded::Pause`], e.g. music under an alarm) or is stopped for good
//! ([`Backgrounded::Stop`], state [`FocusState::None`]). When the foreground
//! activity releases its channel, the highest remaining one returns to the
//! foreground. A channel holds one activity: a second one acquiring it
//! replaces the first, which gets [`FocusState::None`].
//!
//! [`FocusManager`] is plain logic with no I/O, owned by the speaker's actor:
//! each call returns the focus changes it caused, in the order observers must
//! see them (the loser first, so nothing is ever heard twice at full volume),
//! and logs each at debug with the stable message `"audio focus"`.

use std::fmt;

use tokio::time::{Duration, Instant};

/// The AVS audio channels. The derived order is the priority: `Dialog` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// Alexa speaking, the microphone open (SpeechSynthesizer, SpeechRecognizer).
    Dialog,
    /// Calls (Alexa calling, Bluetooth hands-free).
    Communications,
    /// Alarms, timers, reminders, notifications.
    Alerts,
    /// Music, podcasts, radio (AudioPlayer, Bluetooth A2DP).
    Content,
}

impl Channel {
    /// All channels, highest priority first.
    pub const ALL: [Channel; 4] = [
        Channel::Dialog,
        Channel::Communications,
        Channel::Alerts,
        Channel::Content,
    ];

    /// The channel's name as the AudioActivityTracker context spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Dialog => "dialog",
            Channel::Communications => "communications",
            Channel::Alerts => "alert",
            Channel::Content => "content",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an activity may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FocusState {
    /// Play at full volume.
    Foreground,
    /// A higher channel is active: duck or pause, as the activity asked.
    Background,
    /// Stop for good: the activity lost its channel.
    None,
}

/// What an activity wants done with it while a higher channel is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backgrounded {
    /// Keep playing, attenuated (about -20 dB).
    Duck,
    /// Stop taking audio, and carry on from there once back in the foreground.
    Pause,
    /// End the activity ([`FocusState::None`]).
    Stop,
}

/// An activity holding (or having held) a channel; returned by
/// [`FocusManager::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActivityId(u64);

/// One focus change, to be applied to the activity's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FocusChange {
    /// Whose focus changed.
    pub activity: ActivityId,
    /// The AVS interface that plays it (e.g. `SpeechSynthesizer`).
    pub interface: &'static str,
    /// The channel it holds.
    pub channel: Channel,
    /// Its new state.
    pub state: FocusState,
    /// What it asked for in the background.
    pub backgrounded: Backgrounded,
}

#[derive(Debug, Clone)]
struct Holder {
    id: ActivityId,
    interface: &'static str,
    backgrounded: Backgrounded,
    state: FocusState,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    holder: Option<Holder>,
    /// The interface that last held the channel and when it let go, for the
    /// AudioActivityTracker context.
    last: Option<(&'static str, Instant)>,
}

/// The focus of the four audio channels. See the module documentation.
#[derive(Debug, Default)]
pub struct FocusManager {
    slots: [Slot; 4],
    next_id: u64,
}

impl FocusManager {
    /// No channel in use.
    pub fn new() -> Self {
        Self::default()
    }

    /// `interface` takes `channel` for a new activity; returns its id and the
    /// changes this caused, the new activity's own state last.
    pub fn acquire(
        &mut self,
        channel: Channel,
        interface: &'static str,
        backgrounded: Backgrounded,
    ) -> (ActivityId, Vec<FocusChange>) {
        self.next_id += 1;
        let id = ActivityId(self.next_id);
        let mut changes = Vec::new();
        if let Some(old) = self.slots[channel.index()].holder.take() {
            self.slots[channel.index()].last = Some((old.interface, Instant::now()));
            changes.push(change(&old, channel, FocusState::None));
        }
        self.slots[channel.index()].holder = Some(Holder {
            id,
            interface,
            backgrounded,
            // Set by `settle`, which reports it.
            state: FocusState::None,
        });
        self.settle(&mut changes);
        (id, changes)
    }

    /// The activity `id` is over; returns the changes this caused (the
    /// highest remaining activity comes back to the foreground). Releasing
    /// an activity that already lost its channel changes nothing.
    pub fn release(&mut self, id: ActivityId) -> Vec<FocusChange> {
        let mut changes = Vec::new();
        for channel in Channel::ALL {
            let slot = &mut self.slots[channel.index()];
            if slot.holder.as_ref().is_some_and(|h| h.id == id) {
                if let Some(old) = slot.holder.take() {
                    slot.last = Some((old.interface, Instant::now()));
                    changes.push(change(&old, channel, FocusState::None));
                }
                self.settle(&mut changes);
                break;
            }
        }
        changes
    }

    /// The current state of activity `id` ([`FocusState::None`] once it has
    /// lost or released its channel).
    pub fn state(&self, id: ActivityId) -> FocusState {
        self.slots
            .iter()
            .filter_map(|s| s.holder.as_ref())
            .find(|h| h.id == id)
            .map_or(FocusState::None, |h| h.state)
    }

    /// The channel in the foreground, if any is in use.
    pub fn foreground(&self) -> Option<Channel> {
        Channel::ALL
            .into_iter()
            .find(|c| self.slots[c.index()].holder.is_some())
    }

    /// For the AudioActivityTracker context: the interface that holds or
    /// last held `channel`, and how long the channel has been idle (zero
    /// while it is in use). `None` for a channel never used.
    pub fn activity(&self, channel: Channel) -> Option<(&'static str, Duration)> {
        let slot = &self.slots[channel.index()];
        match (&slot.holder, slot.last) {
            (Some(h), _) => Some((h.interface, Duration::ZERO)),
            (None, Some((interface, since))) => Some((interface, since.elapsed())),
            (None, None) => None,
        }
    }

    /// Gives every holder the state its rank calls for, appending what
    /// changed: demotions first, the new foreground last.
    fn settle(&mut self, changes: &mut Vec<FocusChange>) {
        let top = self.foreground();
        let mut promoted = None;
        for channel in Channel::ALL {
            let slot = &mut self.slots[channel.index()];
            let Some(holder) = slot.holder.as_mut() else {
                continue;
            };
            let wanted = if Some(channel) == top {
                FocusState::Foreground
            } else if holder.backgrounded == Backgrounded::Stop {
                FocusState::None
            } else {
                FocusState::Background
            };
            if wanted == holder.state {
                continue;
            }
            holder.state = wanted;
            let c = change(holder, channel, wanted);
            if wanted == FocusState::None {
                slot.last = Some((holder.interface, Instant::now()));
                slot.holder = None;
            }
            if wanted == FocusState::Foreground {
                promoted = Some(c);
            } else {
                changes.push(c);
            }
        }
        changes.extend(promoted);
        for c in changes.iter() {
            tracing::debug!(
                channel = %c.channel,
                interface = c.interface,
                state = ?c.state,
                backgrounded = ?c.backgrounded,
                "audio focus"
            );
        }
    }
}

fn change(holder: &Holder, channel: Channel, state: FocusState) -> FocusChange {
    FocusChange {
        activity: holder.id,
        interface: holder.interface,
        channel,
        state,
        backgrounded: holder.backgrounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(changes: &[FocusChange]) -> Vec<(&'static str, FocusState)> {
        changes.iter().map(|c| (c.interface, c.state)).collect()
    }

    #[test]
    fn the_first_activity_gets_the_foreground() {
        let mut focus = FocusManager::new();
        let (music, changes) = focus.acquire(Channel::Content, "AudioPlayer", Backgrounded::Duck);
        assert_eq!(states(&changes), [("AudioPlayer", FocusState::Foreground)]);
        assert_eq!(focus.state(music), FocusState::Foreground);
        assert_eq!(focus.foreground(), Some(Channel::Content));
    }

    #[test]
    fn dialog_ducks_content_and_release_restores_it() {
        let mut focus = FocusManager::new();
        let (music, _) = focus.acquire(Channel::Content, "AudioPlayer", Backgrounded::Duck);
        let (speech, changes) =
            focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        assert_eq!(
            states(&changes),
            [
                ("AudioPlayer", FocusState::Background),
                ("SpeechSynthesizer", FocusState::Foreground)
            ],
            "the music is ducked before Alexa speaks"
        );
        assert_eq!(changes[0].backgrounded, Backgrounded::Duck);
        assert_eq!(focus.state(music), FocusState::Background);

        let changes = focus.release(speech);
        assert_eq!(
            states(&changes),
            [
                ("SpeechSynthesizer", FocusState::None),
                ("AudioPlayer", FocusState::Foreground)
            ]
        );
        assert_eq!(focus.state(music), FocusState::Foreground);
        assert!(focus.release(speech).is_empty(), "released once");
    }

    #[test]
    fn an_alert_pauses_content_and_release_resumes_it() {
        let mut focus = FocusManager::new();
        // AudioPlayer pauses under an alarm and ducks under speech; it says
        // which when it acquires, as the channel observer in AVS does.
        let (music, _) = focus.acquire(Channel::Content, "AudioPlayer", Backgrounded::Pause);
        let (alarm, changes) = focus.acquire(Channel::Alerts, "Alerts", Backgrounded::Duck);
        assert_eq!(
            states(&changes),
            [
                ("AudioPlayer", FocusState::Background),
                ("Alerts", FocusState::Foreground)
            ]
        );
        assert_eq!(changes[0].backgrounded, Backgrounded::Pause);

        // Alexa answers over the alarm: the alarm goes to the background too.
        let (speech, changes) =
            focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        assert_eq!(
            states(&changes),
            [
                ("Alerts", FocusState::Background),
                ("SpeechSynthesizer", FocusState::Foreground)
            ],
            "the music, already in the background, is not told again"
        );
        assert_eq!(
            states(&focus.release(speech)),
            [
                ("SpeechSynthesizer", FocusState::None),
                ("Alerts", FocusState::Foreground)
            ]
        );
        assert_eq!(
            states(&focus.release(alarm)),
            [
                ("Alerts", FocusState::None),
                ("AudioPlayer", FocusState::Foreground)
            ]
        );
        assert_eq!(focus.state(music), FocusState::Foreground);
    }

    #[test]
    fn an_activity_that_asks_to_be_stopped_loses_its_channel() {
        let mut focus = FocusManager::new();
        let (speech, _) = focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        let (_call, changes) = focus.acquire(
            Channel::Communications,
            "PhoneCallController",
            Backgrounded::Duck,
        );
        assert_eq!(
            states(&changes),
            [("PhoneCallController", FocusState::Background)],
            "a lower channel starts in the background and does not disturb a higher one"
        );
        assert_eq!(focus.state(speech), FocusState::Foreground);

        let mut focus = FocusManager::new();
        let (call, _) = focus.acquire(
            Channel::Communications,
            "PhoneCallController",
            Backgrounded::Stop,
        );
        let (_speech, changes) =
            focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        assert_eq!(
            states(&changes),
            [
                ("PhoneCallController", FocusState::None),
                ("SpeechSynthesizer", FocusState::Foreground)
            ]
        );
        assert_eq!(focus.state(call), FocusState::None);
        assert!(
            focus.release(call).is_empty(),
            "it already lost its channel"
        );
    }

    #[test]
    fn a_second_activity_on_a_channel_replaces_the_first() {
        let mut focus = FocusManager::new();
        let (first, _) = focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        let (second, changes) =
            focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            (changes[0].activity, changes[0].state),
            (first, FocusState::None)
        );
        assert_eq!(
            (changes[1].activity, changes[1].state),
            (second, FocusState::Foreground)
        );
        assert!(focus.release(first).is_empty());
        assert_eq!(focus.state(second), FocusState::Foreground);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_release() {
        let mut focus = FocusManager::new();
        assert_eq!(focus.activity(Channel::Dialog), None, "never used");
        let (speech, _) = focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            focus.activity(Channel::Dialog),
            Some(("SpeechSynthesizer", Duration::ZERO)),
            "in use: idle for zero"
        );
        focus.release(speech);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(
            focus.activity(Channel::Dialog),
            Some(("SpeechSynthesizer", Duration::from_millis(1_500)))
        );
    }
}
