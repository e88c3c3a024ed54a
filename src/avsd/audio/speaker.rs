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
use super::focus::{ActivityId, Backgrounded, FocusChange, FocusManager, FocusState};
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
        let (gain, paused) = focus_gain(activity.gain, activity.backgrounded, state);
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
            let (gain, paused) = focus_gain(p.gain, change.backgrounded, change.state);
            p.focus.send_replace(change.state);
            p.control.set_gain(gain);
            p.control.set_paused(paused);
            if change.state == FocusState::None {
                p.control.stop();
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
