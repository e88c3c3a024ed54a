//! The speaker: the [`Speaker`] handle and the thread behind it, which
//! opens (and reopens) the output, adds each sound to the mixer under audio
//! focus, hands its MP3 to a decoder thread, and turns the sources' counters
//! into [`PlayerEvent`]s. See `playback.rs` for the picture.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::AudioError;
use super::decode::{Mp3Input, decode};
use super::focus::{ActivityId, Backgrounded, Channel, FocusChange, FocusManager, FocusState};
use super::mixer::{DUCKED_GAIN, MAX_SOURCES, SourceControl, SourceFeed};
use super::playback::{Activity, PlaybackConfig, Player, PlayerEvent};

mod output;

use output::{Output, open};

/// Audio a source's ring holds between decoder and callback. The decoder
/// runs far ahead of real time, so this only has to cover its scheduling gaps.
const RING_MS: u32 = 500;
/// How often the speaker thread turns counters into events. Bounds how late
/// `Started` / `Finished` / `Stopped` are reported, not the audio itself.
const MONITOR_TICK: Duration = Duration::from_millis(5);
/// The same with nothing playing, where there are no events to report: a
/// command still wakes the thread at once; this only bounds how late it
/// notices that the last handle is gone (and a device failure while idle).
/// Keeps the idle daemon from waking 200 times a second.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The speaker: a handle on the output thread. Cheap to clone; the threads
/// end when the last handle is dropped and nothing plays.
#[derive(Clone)]
pub struct Speaker {
    commands: Sender<Command>,
    /// The thread ends once no handle holds this and nothing plays.
    alive: Arc<()>,
}

/// Sound made in code (an alert's tone): called with the output's rate,
/// it appends the next block of mono samples to the vector and returns
/// false once the sound is over. It runs on a decoder thread, ahead of
/// real time by the source's ring.
pub type PcmSource = Box<dyn FnMut(u32, &mut Vec<f32>) -> bool + Send>;

/// What a decoder thread turns into samples.
pub(super) enum Input {
    /// MP3 bytes, decoded and resampled.
    Mp3(Mp3Input),
    /// Samples made at the output's rate.
    Pcm(PcmSource),
}

/// What the speaker thread is asked to do.
pub(super) enum Command {
    Play {
        input: Input,
        activity: Activity,
        /// Close the output once this source is over (a [`Player::start`]
        /// of its own).
        close_after: bool,
        reply: oneshot::Sender<Result<Player, AudioError>>,
    },
    Decoded {
        decoder: usize,
        result: Result<(), AudioError>,
    },
    /// Take `activity`'s channel with no sound of its own (the microphone
    /// open): lower channels duck or pause until [`Command::Release`].
    Hold {
        token: u64,
        activity: Activity,
    },
    Release {
        token: u64,
    },
}

/// A focus channel held with no sound ([`Speaker::hold`]); released when
/// dropped.
pub struct FocusHold {
    token: u64,
    commands: Sender<Command>,
}

impl Drop for FocusHold {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Release { token: self.token });
    }
}

impl Speaker {
    /// Starts the speaker thread for the output `config` names. The device
    /// is opened with the first answer; its errors come back from
    /// [`Speaker::speak`].
    pub fn new(config: PlaybackConfig) -> Result<Speaker, AudioError> {
        let (commands, rx) = std::sync::mpsc::channel();
        let alive = Arc::new(());
        let thread = SpeakerThread::new(config, commands.clone(), &alive);
        thread::Builder::new()
            .name("avsd-speaker".into())
            .spawn(move || thread.run(rx))
            .map_err(|e| AudioError::Thread(format!("cannot start the speaker thread: {e}")))?;
        Ok(Speaker { commands, alive })
    }

    /// Plays Alexa's answer, whose MP3 arrives on `attachment`, straight
    /// from it to a decoder thread, on the Dialog channel.
    pub async fn speak(&self, attachment: mpsc::Receiver<Bytes>) -> Result<Player, AudioError> {
        self.play(attachment, Activity::SPEECH).await
    }

    /// Plays the MP3 that arrives on `data` as `activity`: it takes that
    /// focus channel, and the others duck, pause or stop as focus says.
    pub async fn play(
        &self,
        data: mpsc::Receiver<Bytes>,
        activity: Activity,
    ) -> Result<Player, AudioError> {
        self.start(
            Input::Mp3(Mp3Input::Attachment(data, false)),
            activity,
            false,
        )
        .await
    }

    /// Plays the sound `source` makes as `activity`, under focus like
    /// [`Speaker::play`].
    pub async fn play_pcm(
        &self,
        source: PcmSource,
        activity: Activity,
    ) -> Result<Player, AudioError> {
        self.start(Input::Pcm(source), activity, false).await
    }

    /// Holds `activity`'s focus channel with no sound of its own, e.g. the
    /// Dialog channel while the microphone is open, so that music ducks
    /// (or pauses) then too; released when the [`FocusHold`] is dropped.
    /// Never blocks.
    pub fn hold(&self, activity: Activity) -> FocusHold {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = NEXT.fetch_add(1, Ordering::Relaxed);
        // A speaker thread that is gone holds nothing: nothing to duck.
        let _ = self.commands.send(Command::Hold { token, activity });
        FocusHold {
            token,
            commands: self.commands.clone(),
        }
    }

    /// Plays an AudioPlayer stream from [`crate::media::open`] as
    /// `activity`, any codec it carries; its events stay with the caller.
    pub async fn play_media(
        &self,
        audio: crate::media::MediaAudio,
        activity: Activity,
    ) -> Result<Player, AudioError> {
        self.start(Input::Mp3(Mp3Input::Media(audio)), activity, false)
            .await
    }

    async fn start(
        &self,
        input: Input,
        activity: Activity,
        close_after: bool,
    ) -> Result<Player, AudioError> {
        let (reply, answer) = oneshot::channel();
        let gone = || AudioError::Thread("the speaker thread is gone".into());
        self.commands
            .send(Command::Play {
                input,
                activity,
                close_after,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Player {
    /// Opens the ALSA output device for this one MP3, pushed with
    /// [`Player::push`]; the device closes when it is over. Device errors
    /// ([`AudioError::NoDevice`] and the like) come back here; decode errors
    /// later, as [`PlayerEvent::Failed`].
    pub async fn start(config: PlaybackConfig) -> Result<Player, AudioError> {
        let speaker = Speaker::new(config)?;
        let (input, rx) = mpsc::unbounded_channel();
        let mut player = speaker
            .start(Input::Mp3(Mp3Input::Pushed(rx)), Activity::SPEECH, true)
            .await?;
        player.input = Some(input);
        player.own = Some(speaker.alive.clone());
        Ok(player)
    }
}

/// A source playing, as the speaker thread follows it.
struct Playing {
    control: Arc<SourceControl>,
    activity: ActivityId,
    /// Its channel and what it asked for in the background.
    channel: Channel,
    backgrounded: Backgrounded,
    gain: f32,
    events: mpsc::UnboundedSender<PlayerEvent>,
    /// Its focus state, for players that report it (alerts).
    focus: watch::Sender<FocusState>,
    decoder: usize,
    close_after: bool,
    started: bool,
    decoded: bool,
    /// Callback count when its last sample was handed over.
    drained_at: Option<u64>,
}

/// One MP3 for a decoder thread: where its bytes come from, where its
/// samples go, and the output's rate.
type Job = (Input, SourceFeed, u32);

pub(super) struct SpeakerThread {
    config: PlaybackConfig,
    /// For the decoder threads to report back.
    own: Sender<Command>,
    alive: std::sync::Weak<()>,
    output: Option<Output>,
    playing: Vec<Playing>,
    focus: FocusManager,
    /// Each decoder thread's job queue, and whether it is busy.
    decoders: Vec<(Sender<Job>, bool)>,
    /// Channels held with no sound ([`Speaker::hold`]), by token.
    held: Vec<(u64, ActivityId)>,
}

impl SpeakerThread {
    /// The thread's state for `config`; `alive` is the handles' token.
    pub(super) fn new(config: PlaybackConfig, own: Sender<Command>, alive: &Arc<()>) -> Self {
        Self {
            config,
            own,
            alive: Arc::downgrade(alive),
            output: None,
            playing: Vec::new(),
            focus: FocusManager::new(),
            decoders: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl SpeakerThread {
    /// Serves commands until the last handle is gone and nothing plays.
    pub(super) fn run(mut self, rx: Receiver<Command>) {
        loop {
            let tick = if self.playing.is_empty() {
                IDLE_TICK
            } else {
                MONITOR_TICK
            };
            match rx.recv_timeout(tick) {
                Ok(Command::Play {
                    input,
                    activity,
                    close_after,
                    reply,
                }) => {
                    let result = self.play(input, activity, close_after);
                    if let Err(e) = &result {
                        tracing::debug!(error = %e, "cannot play");
                    }
                    let _ = reply.send(result);
                }
                Ok(Command::Decoded { decoder, result }) => self.decoded(decoder, result),
                Ok(Command::Hold { token, activity }) => {
                    let (id, changes) = self.focus.acquire(
                        activity.channel,
                        activity.interface,
                        activity.backgrounded,
                    );
                    self.held.push((token, id));
                    self.apply(&changes);
                }
                Ok(Command::Release { token }) => {
                    if let Some(at) = self.held.iter().position(|(t, _)| *t == token) {
                        let (_, id) = self.held.swap_remove(at);
                        let changes = self.focus.release(id);
                        self.apply(&changes);
                    }
                }
                // `own` keeps the channel open: never disconnected.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            self.monitor();
            if self.playing.is_empty() && self.alive.strong_count() == 0 {
                // Dropping the job queues ends the decoder threads.
                self.close();
                return;
            }
        }
    }

    fn play(
        &mut self,
        input: Input,
        activity: Activity,
        close_after: bool,
    ) -> Result<Player, AudioError> {
        let decoder = self.idle_decoder()?;
        let output = match &mut self.output {
            Some(output) => output,
            None => self.output.insert(open(&self.config)?),
        };
        let format = output.format;
        let capacity = (format.rate * RING_MS / 1000) as usize;
        if output.mixer.collect() >= MAX_SOURCES {
            return Err(AudioError::Thread(format!(
                "{MAX_SOURCES} sounds already play at once"
            )));
        }
        let (id, changes) =
            self.focus
                .acquire(activity.channel, activity.interface, activity.backgrounded);
        // Start it at the gain of its first state, so a sound that starts
        // in the background is never heard loud.
        let state = changes
            .iter()
            .find(|c| c.activity == id)
            .map_or(FocusState::None, |c| c.state);
        let backgrounded = content_under(&self.focus, activity.channel, activity.backgrounded);
        let (gain, paused) = focus_gain(activity.gain, backgrounded, state);
        let output = self
            .output
            .as_mut()
            .ok_or_else(|| AudioError::Thread("the output closed while a sound started".into()))?;
        let feed = match output.mixer.add(capacity, gain) {
            Ok(feed) => feed,
            Err(_) => {
                let undo = self.focus.release(id);
                self.apply(&undo);
                return Err(AudioError::Thread(format!(
                    "{MAX_SOURCES} sounds already play at once"
                )));
            }
        };
        let control = feed.control().clone();
        control.set_paused(paused);
        if state == FocusState::None {
            control.stop();
        }
        if self.decoders[decoder]
            .0
            .send((input, feed, format.rate))
            .is_err()
        {
            let undo = self.focus.release(id);
            self.apply(&undo);
            return Err(AudioError::Thread("an MP3 decoder thread died".into()));
        }
        self.decoders[decoder].1 = true;
        self.apply(&changes);
        let (events, events_rx) = mpsc::unbounded_channel();
        let (focus, focus_rx) = watch::channel(state);
        self.playing.push(Playing {
            activity: id,
            channel: activity.channel,
            backgrounded: activity.backgrounded,
            gain: activity.gain,
            control: control.clone(),
            events,
            focus,
            decoder,
            close_after,
            started: false,
            decoded: false,
            drained_at: None,
        });
        let mut player = Player::new(events_rx, control, format);
        player.focus = Some(focus_rx);
        Ok(player)
    }

    /// A decoder thread with nothing to do, started if none is free.
    fn idle_decoder(&mut self) -> Result<usize, AudioError> {
        if let Some(i) = self.decoders.iter().position(|(_, busy)| !busy) {
            return Ok(i);
        }
        if self.decoders.len() >= MAX_SOURCES {
            return Err(AudioError::Thread(format!(
                "all {MAX_SOURCES} MP3 decoder threads are busy"
            )));
        }
        let index = self.decoders.len();
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let done = self.own.clone();
        thread::Builder::new()
            .name("avsd-mp3".into())
            .spawn(move || {
                for (input, feed, rate) in rx {
                    let result = match input {
                        Input::Mp3(input) => decode(input, feed, rate),
                        Input::Pcm(source) => synthesize(source, feed, rate),
                    };
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "MP3 answer failed");
                    }
                    let decoded = Command::Decoded {
                        decoder: index,
                        result,
                    };
                    if done.send(decoded).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| AudioError::Thread(format!("cannot start an MP3 decoder thread: {e}")))?;
        self.decoders.push((jobs, false));
        Ok(index)
    }

    fn decoded(&mut self, decoder: usize, result: Result<(), AudioError>) {
        if let Some(d) = self.decoders.get_mut(decoder) {
            d.1 = false;
        }
        let Some(at) = self
            .playing
            .iter()
            .position(|p| p.decoder == decoder && !p.decoded)
        else {
            return;
        };
        match result {
            Ok(()) => self.playing[at].decoded = true,
            Err(e) => {
                let p = self.playing.remove(at);
                p.control.stop();
                self.finish(p, PlayerEvent::Failed(e));
            }
        }
    }

    /// Turns the counters into events.
    fn monitor(&mut self) {
        if let Some(output) = &mut self.output {
            output.mixer.collect();
        }
        let failure = self
            .output
            .as_mut()
            .and_then(|o| o.failure(&self.config.device, !self.playing.is_empty()));
        let callbacks = self
            .output
            .as_ref()
            .map_or(0, |o| o.callbacks.load(Ordering::Relaxed));
        let mut i = 0;
        while i < self.playing.len() {
            let p = &mut self.playing[i];
            if !p.started && p.control.played_frames() > 0 {
                p.started = true;
                let _ = p.events.send(PlayerEvent::Started);
            }
            let end = if p.control.is_stopped() {
                Some(PlayerEvent::Stopped)
            } else if let Some(e) = &failure {
                Some(PlayerEvent::Failed(e.clone()))
            } else if p.decoded && p.control.ended() {
                // The callback handed over the last sample; ALSA still holds
                // up to one buffer (two periods). Finished after those.
                let at = *p.drained_at.get_or_insert(callbacks);
                (callbacks >= at + 2).then_some(PlayerEvent::Finished)
            } else {
                None
            };
            match end {
                Some(event) => {
                    let p = self.playing.remove(i);
                    if event == PlayerEvent::Finished && !p.started {
                        let _ = p.events.send(PlayerEvent::Started);
                    }
                    self.finish(p, event);
                }
                None => i += 1,
            }
        }
        if failure.is_some() {
            self.close();
        }
    }

    /// Gives the sources the gain and pause their focus calls for.
    fn apply(&self, changes: &[FocusChange]) {
        for change in changes {
            let Some(p) = self.playing.iter().find(|p| p.activity == change.activity) else {
                continue;
            };
            let backgrounded = content_under(&self.focus, change.channel, change.backgrounded);
            let (gain, paused) = focus_gain(p.gain, backgrounded, change.state);
            p.focus.send_replace(change.state);
            p.control.set_gain(gain);
            p.control.set_paused(paused);
            if change.state == FocusState::None {
                p.control.stop();
            }
        }
        // Music already in the background (under Alexa's voice) when an
        // alert comes or goes changes no focus state, but pause or duck.
        for p in &self.playing {
            if p.channel == Channel::Content
                && self.focus.state(p.activity) == FocusState::Background
            {
                let backgrounded = content_under(&self.focus, p.channel, p.backgrounded);
                let (gain, paused) = focus_gain(p.gain, backgrounded, FocusState::Background);
                p.control.set_gain(gain);
                p.control.set_paused(paused);
            }
        }
    }

    /// Sends a source's last event. A speaker opened for that source alone
    /// closes first, so the event channel closing means the file or card
    /// has everything; but a failure is told before closing, which can
    /// block until a stuck driver lets go.
    fn finish(&mut self, p: Playing, event: PlayerEvent) {
        let changes = self.focus.release(p.activity);
        self.apply(&changes);
        if p.close_after && !matches!(event, PlayerEvent::Failed(_)) {
            self.close();
        }
        let close = p.close_after;
        let _ = p.events.send(event);
        drop(p);
        if close {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some(output) = self.output.take() {
            drop(output.stream);
            tracing::debug!(device = self.config.device, "playback closed");
        }
    }
}

/// Content ducks only under Alexa's voice and the microphone (the Dialog
/// channel); while an alert or a call holds its channel it pauses, and
/// carries on where it was, as AVS's focus management asks of AudioPlayer.
fn content_under(
    focus: &FocusManager,
    channel: Channel,
    backgrounded: Backgrounded,
) -> Backgrounded {
    let held = |c: Channel| focus.activity(c).is_some_and(|(_, idle)| idle.is_zero());
    if channel == Channel::Content
        && backgrounded == Backgrounded::Duck
        && (held(Channel::Alerts) || held(Channel::Communications))
    {
        Backgrounded::Pause
    } else {
        backgrounded
    }
}

/// Plays what `source` makes into `feed` at `rate`, waiting for room in
/// its ring; ends when the sound is over or the source was stopped.
fn synthesize(mut source: PcmSource, mut feed: SourceFeed, rate: u32) -> Result<(), AudioError> {
    let mut block = Vec::new();
    loop {
        block.clear();
        let more = source(rate, &mut block);
        let mut rest = &block[..];
        while !rest.is_empty() {
            if feed.is_closed() {
                return Ok(());
            }
            let n = feed.push(rest);
            if n == 0 {
                // The ring is full: wait about a period, as the decoder does.
                thread::sleep(Duration::from_millis(5));
            }
            rest = &rest[n..];
        }
        if !more {
            return Ok(());
        }
    }
}

/// The gain and pause of a source with foreground gain `gain` in `state`.
fn focus_gain(gain: f32, backgrounded: Backgrounded, state: FocusState) -> (f32, bool) {
    match (state, backgrounded) {
        (FocusState::Foreground, _) => (gain, false),
        (FocusState::Background, Backgrounded::Duck) => (gain * DUCKED_GAIN, false),
        (FocusState::Background, _) | (FocusState::None, _) => (gain, true),
    }
}

#[cfg(test)]
mod content_tests {
    use super::*;

    #[test]
    fn content_pauses_while_an_alert_sounds_and_ducks_under_the_dialog_alone() {
        let mut focus = FocusManager::new();
        focus.acquire(Channel::Content, "AudioPlayer", Backgrounded::Duck);
        let (dialog, _) = focus.acquire(Channel::Dialog, "SpeechSynthesizer", Backgrounded::Stop);
        assert_eq!(
            content_under(&focus, Channel::Content, Backgrounded::Duck),
            Backgrounded::Duck
        );
        let (alert, _) = focus.acquire(Channel::Alerts, "Alerts", Backgrounded::Duck);
        assert_eq!(
            content_under(&focus, Channel::Content, Backgrounded::Duck),
            Backgrounded::Pause,
            "an alert below the dialog still pauses the music"
        );
        focus.release(dialog);
        assert_eq!(
            content_under(&focus, Channel::Content, Backgrounded::Duck),
            Backgrounded::Pause
        );
        assert_eq!(
            content_under(&focus, Channel::Alerts, Backgrounded::Duck),
            Backgrounded::Duck,
            "only Content"
        );
        focus.release(alert);
        assert_eq!(
            content_under(&focus, Channel::Content, Backgrounded::Duck),
            Backgrounded::Duck
        );
    }
}
