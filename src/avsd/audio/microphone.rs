//! The microphone privacy switch: while muted avsd opens no capture device
//! at all (no dialog, no wake word), and Tap and Hold are refused. The
//! switch is kept in the state directory so a muted device stays muted
//! across restarts and power cuts. [`Switch`] is that persisted boolean,
//! also used for the wake word's `Enabled`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kit::fsutil;
use kit::published::{self, Publisher, Subscriber};

/// The file in the state directory that holds the switch.
pub const MICROPHONE_FILE: &str = "microphone.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    on: bool,
    /// For a switch whose default comes from avsd.toml: that default when
    /// the user set the switch, so a later edit of avsd.toml is noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<bool>,
}

/// The microphone privacy switch: on means muted.
pub type MicSwitch = Switch;

/// A persisted on/off switch: a cheap, cloneable handle; every clone sees
/// one state.
#[derive(Clone)]
pub struct Switch {
    name: &'static str,
    /// Where it is saved; `None` for a switch kept in memory only.
    path: Option<PathBuf>,
    state_dir: PathBuf,
    /// The config's default, saved with the value (see [`Switch::load_over_config`]).
    config: Option<bool>,
    /// Serialises writers so the file and the published value agree.
    tx: Arc<Mutex<Publisher<bool>>>,
    rx: Subscriber<bool>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Switch({}={})", self.name, *self.rx.borrow())
    }
}

impl Switch {
    /// The microphone switch as saved in `state_dir` (unmuted when nothing
    /// was saved; muted when the file cannot be read).
    pub fn load(state_dir: &Path) -> Self {
        let mic = Self::load_named(state_dir, "microphone muted", MICROPHONE_FILE, false, true);
        if mic.is_muted() {
            tracing::info!("the microphone is muted (saved in {MICROPHONE_FILE})");
        }
        mic
    }

    /// The switch `name` saved in `file` of `state_dir`: `default` when
    /// nothing was saved, `safe` when the file cannot be read.
    pub fn load_named(
        state_dir: &Path,
        name: &'static str,
        file: &str,
        default: bool,
        safe: bool,
    ) -> Self {
        let path = state_dir.join(file);
        let on = load(&path, name, safe).map_or(default, |s| s.on);
        Self::persisted(name, path, state_dir, None, on)
    }

    /// The switch `name` saved in `file` of `state_dir`, whose default is
    /// `config` (a key of avsd.toml): the value the user last set wins
    /// while avsd.toml still says what it said then; once the administrator
    /// changes the key, avsd.toml wins again (until the user sets the
    /// switch anew). `safe` when the file cannot be read.
    pub fn load_over_config(
        state_dir: &Path,
        name: &'static str,
        file: &str,
        config: bool,
        safe: bool,
    ) -> Self {
        let path = state_dir.join(file);
        let on = match load(&path, name, safe) {
            None => config,
            Some(Saved {
                on,
                config: Some(then),
            }) if then != config => {
                // The administrator's newer word wins; forget the user's
                // older one, or a second edit of avsd.toml back to `then`
                // would bring it back.
                tracing::info!(
                    "{name}: {config} as avsd.toml says; it was set to {on} in {} while \
                     avsd.toml said {then}, and avsd.toml changed since",
                    path.display()
                );
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!("cannot remove {}: {e}", path.display());
                }
                config
            }
            Some(s) => {
                if s.on != config {
                    tracing::info!("{name}: {} (set by the user, saved in {file})", s.on);
                }
                s.on
            }
        };
        Self::persisted(name, path, state_dir, Some(config), on)
    }

    fn persisted(
        name: &'static str,
        path: PathBuf,
        state_dir: &Path,
        config: Option<bool>,
        on: bool,
    ) -> Self {
        let (tx, rx) = published::channel(on);
        Self {
            name,
            path: Some(path),
            state_dir: state_dir.to_path_buf(),
            config,
            tx: Arc::new(Mutex::new(tx)),
            rx,
        }
    }

    /// A switch kept in memory only, starting at `on`.
    pub fn in_memory(name: &'static str, on: bool) -> Self {
        let (tx, rx) = published::channel(on);
        Self {
            name,
            path: None,
            state_dir: PathBuf::new(),
            config: None,
            tx: Arc::new(Mutex::new(tx)),
            rx,
        }
    }

    /// The value now, and every change.
    pub fn state(&self) -> Subscriber<bool> {
        self.rx.clone()
    }

    /// The value now (for the microphone: whether it is muted).
    pub fn is_on(&self) -> bool {
        *self.rx.borrow()
    }

    /// Whether the microphone is muted now.
    pub fn is_muted(&self) -> bool {
        self.is_on()
    }

    /// Mute or unmute the microphone.
    pub fn set_muted(&self, muted: bool) {
        self.set(muted);
    }

    /// Turn the switch on or off. The change takes effect even if it cannot
    /// be saved (a privacy switch must not fail open); that is logged.
    pub fn set(&self, on: bool) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if *tx.borrow() == on {
            return;
        }
        let saved = Saved {
            on,
            config: self.config,
        };
        let json = serde_json::to_vec(&saved).unwrap_or_default();
        if let Some(path) = &self.path
            && let Err(e) = fsutil::ensure_private_dir(&self.state_dir)
                .and_then(|()| fsutil::write_atomic(path, &json))
        {
            tracing::error!(
                "cannot save the {} switch in {}: {e}; it is {on} now but will be lost at \
                 the next restart (check that the state directory is writable by avsd)",
                self.name,
                path.display(),
            );
        }
        tracing::info!("{}: {on}", self.name);
        tx.send_replace(on);
    }
}

/// The saved switch, `None` when nothing was saved; an unreadable file
/// gives `safe`, since a privacy switch that cannot be read must not turn
/// the microphone on.
fn load(path: &Path, name: &str, safe: bool) -> Option<Saved> {
    let unreadable = Some(Saved {
        on: safe,
        config: None,
    });
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(
                "cannot read the {name} switch {}: {e}; using {safe} (fix the file's \
                 permissions, or delete it)",
                path.display()
            );
            return unreadable;
        }
    };
    match serde_json::from_str::<Saved>(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                "the {name} switch {} is not valid ({e}); using {safe} (set it again over \
                 D-Bus or avsctl to rewrite it, or delete the file)",
                path.display()
            );
            unreadable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_survives_a_reload_and_a_corrupt_file_stays_muted() {
        let dir = tempfile::tempdir().unwrap();
        let mic = MicSwitch::load(dir.path());
        assert!(!mic.is_muted());
        mic.set_muted(true);
        assert!(MicSwitch::load(dir.path()).is_muted());
        mic.set_muted(false);
        assert!(!MicSwitch::load(dir.path()).is_muted());
        std::fs::write(dir.path().join(MICROPHONE_FILE), b"{").unwrap();
        assert!(MicSwitch::load(dir.path()).is_muted());
    }

    #[test]
    fn a_switch_over_config_follows_the_user_until_the_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let load = |config| Switch::load_over_config(dir.path(), "w", "w.json", config, false);
        assert!(load(true).is_on(), "nothing saved: the config");
        assert!(!load(false).is_on(), "nothing saved: the config");
        load(true).set(false);
        assert!(
            !load(true).is_on(),
            "the user's value wins over the config it was set under"
        );
        assert!(!load(true).is_on(), "and keeps winning");
        assert!(!load(false).is_on(), "avsd.toml changed: it wins");
        assert!(
            load(true).is_on(),
            "the user's old value was dropped with the change"
        );
        load(true).set(false);
        std::fs::write(dir.path().join("w.json"), b"garbage").unwrap();
        assert!(!load(true).is_on(), "unreadable: the safe value");
    }
}
