//! The Speaker volume: one owner for the volume and mute that Alexa, D-Bus
//! and local buttons share. An actor (a task with a bounded mailbox) takes
//! every change, whatever made it, applies it to the output (a software
//! gain on the mix, or an ALSA mixer control: [`output`]), saves it
//! atomically in the state directory before answering, and publishes it.
//!
//! Readers: the Speaker agent's context entry (`Speaker.VolumeState`) and
//! D-Bus (`org.avsd.Avs1.Speaker`, one PropertiesChanged per transition)
//! read the published [`Volume`]; the reporter ([`report`]) tells AVS with
//! `VolumeChanged` / `MuteChanged`. A change AVS has not heard of yet is
//! marked in the published value and in the saved file, so one made while
//! offline, or just before a restart, reaches AVS after the next connect:
//! the latest value, once.

mod output;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use avs_proto::message::VolumeState;
use kit::actor::{ActorError, MAILBOX, REPLY_TIMEOUT, call};
use kit::fsutil;
use kit::published::{self, Publisher, Subscriber};

pub use output::{Output, gain_for};

/// File in the state directory that keeps the volume.
pub const VOLUME_FILE: &str = "volume";
/// The volume of a new device: full scale, the mix unchanged.
pub const DEFAULT_VOLUME: u8 = 100;
/// The loudest volume AVS knows.
pub const MAX_VOLUME: u8 = 100;
/// What unmuting at volume 0 raises the volume to.
pub const UNMUTE_VOLUME: u8 = 10;

/// The volume as its owner publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// 0 to 100, as AVS counts it.
    pub volume: u8,
    /// Muted: silent whatever the volume.
    pub muted: bool,
    /// The number of the last volume change AVS has not been told of with
    /// `VolumeChanged`; 0 when AVS knows it.
    #[serde(default)]
    pub unreported_volume: u64,
    /// The same for mute and `MuteChanged`.
    #[serde(default)]
    pub unreported_mute: u64,
}

impl Default for Volume {
    fn default() -> Self {
        Self {
            volume: DEFAULT_VOLUME,
            muted: false,
            unreported_volume: 0,
            unreported_mute: 0,
        }
    }
}

impl Volume {
    /// The `Speaker.VolumeState` context payload.
    pub fn state(&self) -> VolumeState {
        VolumeState {
            volume: self.volume,
            muted: self.muted,
        }
    }
}

/// Who asked for a change. AVS is told of every change a directive asked
/// for, even to the same value (the directive's acknowledgement); of a
/// local one only when something changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Speaker directive.
    Avs,
    /// D-Bus, avsctl, a button.
    Local,
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// The volume is outside 0 to 100.
    #[error("volume {0} is out of range: use 0 to 100")]
    OutOfRange(i64),
    /// The owner did not answer.
    #[error(transparent)]
    Actor(#[from] ActorError),
}

/// What the owner is asked to do.
enum Command {
    /// Set the volume; a change of volume unmutes, as Amazon's devices do.
    Set {
        volume: u8,
        source: Source,
        reply: oneshot::Sender<Volume>,
    },
    /// Move the volume by a step, clamped to 0..=100; unmutes too.
    Adjust {
        delta: i64,
        source: Source,
        reply: oneshot::Sender<Volume>,
    },
    /// Mute or unmute.
    Mute {
        muted: bool,
        source: Source,
        reply: oneshot::Sender<Volume>,
    },
    /// AVS took the events for the changes with these numbers; answered
    /// once the marks are cleared and published.
    Reported {
        volume: u64,
        mute: u64,
        reply: oneshot::Sender<()>,
    },
    /// Answer, to show the task is alive.
    Ping(oneshot::Sender<()>),
}

/// A handle on the volume's owner. Cheap to clone.
#[derive(Clone)]
pub struct VolumeHandle {
    cmd: mpsc::Sender<Command>,
    state: Subscriber<Volume>,
}

impl VolumeHandle {
    /// Set the volume (0 to 100); the published value after it.
    pub async fn set(&self, volume: i64, source: Source) -> Result<Volume, VolumeError> {
        let volume = u8::try_from(volume)
            .ok()
            .filter(|v| *v <= MAX_VOLUME)
            .ok_or(VolumeError::OutOfRange(volume))?;
        Ok(
            call("volume", &self.cmd, REPLY_TIMEOUT, |reply| Command::Set {
                volume,
                source,
                reply,
            })
            .await?,
        )
    }

    /// Move the volume by `delta` (any size; the result is clamped to 0..=100).
    pub async fn adjust(&self, delta: i64, source: Source) -> Result<Volume, VolumeError> {
        Ok(call("volume", &self.cmd, REPLY_TIMEOUT, |reply| {
            Command::Adjust {
                delta,
                source,
                reply,
            }
        })
        .await?)
    }

    /// Mute or unmute.
    pub async fn set_muted(&self, muted: bool, source: Source) -> Result<Volume, VolumeError> {
        Ok(
            call("volume", &self.cmd, REPLY_TIMEOUT, |reply| Command::Mute {
                muted,
                source,
                reply,
            })
            .await?,
        )
    }

    /// The published volume: the current value, and every transition.
    pub fn state(&self) -> Subscriber<Volume> {
        self.state.clone()
    }

    /// Answer within `timeout` or count as wedged.
    pub async fn ping(&self, timeout: Duration) -> Result<(), ActorError> {
        call("volume", &self.cmd, timeout, Command::Ping).await
    }

    /// Waits until the owner has published the cleared marks, so the
    /// reporter never sends the same change twice.
    async fn reported(&self, volume: u64, mute: u64) -> Result<(), ActorError> {
        call("volume", &self.cmd, REPLY_TIMEOUT, |reply| {
            Command::Reported {
                volume,
                mute,
                reply,
            }
        })
        .await
    }
}

/// What the owner is built from.
pub struct Settings {
    /// Where [`VOLUME_FILE`] lives.
    pub state_dir: PathBuf,
    /// Where the volume is applied.
    pub output: Output,
}

/// Restore the saved volume, apply it, and start the owner.
pub fn spawn(
    settings: Settings,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> VolumeHandle {
    let path = settings.state_dir.join(VOLUME_FILE);
    let saved = load(&path);
    if let Err(e) = settings.output.apply(saved.volume, saved.muted) {
        tracing::error!("cannot apply the saved volume {}: {e}", saved.volume);
    }
    let (tx, state) = published::channel(saved);
    let (cmd, rx) = mpsc::channel(MAILBOX);
    let owner = Owner {
        path,
        state_dir: settings.state_dir,
        output: settings.output,
        tx,
        changes: saved.unreported_volume.max(saved.unreported_mute),
    };
    tracker.spawn(owner.run(rx, shutdown));
    VolumeHandle { cmd, state }
}

/// The saved volume, or the default when there is none or it is unreadable
/// (said in the log: a volume is not worth refusing to start over).
fn load(path: &std::path::Path) -> Volume {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Volume::default(),
        Err(e) => {
            tracing::warn!(
                "cannot read the saved volume {}: {e}; using {DEFAULT_VOLUME}",
                path.display()
            );
            return Volume::default();
        }
    };
    match serde_json::from_str::<Volume>(&text) {
        Ok(v) if v.volume <= MAX_VOLUME => v,
        _ => {
            tracing::warn!(
                "the saved volume {} is not a volume from 0 to 100; using {DEFAULT_VOLUME}",
                path.display()
            );
            Volume::default()
        }
    }
}

struct Owner {
    path: PathBuf,
    state_dir: PathBuf,
    output: Output,
    tx: Publisher<Volume>,
    /// Numbers the changes AVS must hear of.
    changes: u64,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        loop {
            let cmd = tokio::select! {
                _ = shutdown.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => return,
                },
            };
            match cmd {
                Command::Set {
                    volume,
                    source,
                    reply,
                } => {
                    let _ = reply.send(self.change(Some(volume), Some(false), source));
                }
                Command::Adjust {
                    delta,
                    source,
                    reply,
                } => {
                    let now = i64::from(self.tx.borrow().volume);
                    let volume = now.saturating_add(delta).clamp(0, i64::from(MAX_VOLUME));
                    let volume = u8::try_from(volume).unwrap_or(MAX_VOLUME);
                    let _ = reply.send(self.change(Some(volume), Some(false), source));
                }
                Command::Mute {
                    muted,
                    source,
                    reply,
                } => {
                    let _ = reply.send(self.change(None, Some(muted), source));
                }
                Command::Reported {
                    volume,
                    mute,
                    reply,
                } => {
                    self.reported(volume, mute);
                    let _ = reply.send(());
                }
                Command::Ping(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    /// Apply, save and publish a change. `volume` is a volume request
    /// (which also unmutes, silently: `muted` is then `Some(false)`); a
    /// mute request has no volume.
    fn change(&mut self, volume: Option<u8>, muted: Option<bool>, source: Source) -> Volume {
        let old = *self.tx.borrow();
        let mut new = old;
        if let Some(v) = volume {
            new.volume = v;
        }
        if let Some(m) = muted {
            new.muted = m;
        }
        let volume_asked = volume.is_some();
        // Unmuting at volume 0 would still be silent, and the user asked to
        // hear something: up to UNMUTE_VOLUME, as Amazon's SDK does.
        let raised = !volume_asked && old.muted && !new.muted && new.volume == 0;
        if raised {
            new.volume = UNMUTE_VOLUME;
        }
        // A volume request reports VolumeChanged (its muted field carries an
        // unmute); a mute request reports MuteChanged, and VolumeChanged too
        // when it raised the volume.
        let tell_volume = raised || (volume_asked && (source == Source::Avs || new != old));
        let tell_mute = !volume_asked && (source == Source::Avs || new.muted != old.muted);
        if tell_volume {
            self.changes += 1;
            new.unreported_volume = self.changes;
        }
        if tell_mute {
            self.changes += 1;
            new.unreported_mute = self.changes;
        }
        if new == old {
            return new;
        }
        if (new.volume, new.muted) != (old.volume, old.muted) {
            tracing::info!(
                volume = new.volume,
                muted = new.muted,
                ?source,
                "volume changed"
            );
            if let Err(e) = self.output.apply(new.volume, new.muted) {
                tracing::error!("cannot apply volume {}: {e}", new.volume);
            }
        }
        self.save(&new);
        self.tx.send_replace(new);
        new
    }

    fn reported(&mut self, volume: u64, mute: u64) {
        let old = *self.tx.borrow();
        let mut new = old;
        if volume != 0 && new.unreported_volume == volume {
            new.unreported_volume = 0;
        }
        if mute != 0 && new.unreported_mute == mute {
            new.unreported_mute = 0;
        }
        if new != old {
            self.save(&new);
            self.tx.send_replace(new);
        }
    }

    /// Saved before anyone hears of the change, so what AVS and D-Bus were
    /// told survives a power cut.
    fn save(&self, v: &Volume) {
        let json = serde_json::to_vec(v).unwrap_or_default();
        if let Err(e) = fsutil::ensure_private_dir(&self.state_dir)
            .and_then(|()| fsutil::write_atomic(&self.path, &json))
        {
            tracing::error!(
                "cannot save the volume in {}: {e}; it will be lost at the next restart \
                 (check that the state directory is writable by avsd)",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests;
