//! Speaker 1.0 in the stand-in: the events a device sends
//! (`VolumeChanged`, `MuteChanged`) checked against Amazon's documentation
//! and against the directives the stand-in sent.
//!
//! Documented shapes: both events carry `{"volume": long 0..=100,
//! "muted": boolean}`; SetVolume carries `volume` 0..=100, AdjustVolume
//! `volume` -100..=100 (relative), SetMute `mute` (boolean). A device
//! answers SetVolume and AdjustVolume with VolumeChanged, SetMute with
//! MuteChanged, and sends them as well after a change of its own.
//!
//! What the stand-in holds a device to: the next VolumeChanged after a
//! SetVolume 30 reports 30; after an AdjustVolume, the volume it knew
//! (from the last event or VolumeState context) moved by the step and
//! clamped to 0..=100; the next MuteChanged after a SetMute reports that
//! mute. A directive that broke the rules (SetVolume 150, a string) is
//! owed no event: the device answers it with ExceptionEncountered. A
//! refusal is a 400 INVALID_REQUEST_EXCEPTION that says what was expected.

use std::collections::VecDeque;

use serde_json::Value;

use super::rules::{Metadata, Refusal};

/// Directives whose event has not come yet: at most this many are
/// remembered (the oldest is forgotten first), so a test pushing many
/// without a device to answer them cannot grow the stand-in.
const MAX_PENDING: usize = 64;

/// What the stand-in knows of the device's speaker.
#[derive(Debug, Default)]
pub(super) struct Speaker {
    /// The last volume and mute the device reported.
    known: Option<(i64, bool)>,
    /// The volume each VolumeChanged to come must report, in order
    /// (`None`: an AdjustVolume from an unknown volume; any volume).
    volume_owed: VecDeque<Option<i64>>,
    /// The mute each MuteChanged to come must report.
    mute_owed: VecDeque<bool>,
}

impl Speaker {
    /// The stand-in sent Speaker.`name` with `payload`.
    pub(super) fn sent(&mut self, name: &str, payload: &Value) {
        match name {
            "SetVolume" => {
                if let Some(v) = integer(payload, "volume").filter(|v| (0..=100).contains(v)) {
                    push(&mut self.volume_owed, Some(v));
                }
            }
            "AdjustVolume" => {
                if let Some(d) = integer(payload, "volume").filter(|d| (-100..=100).contains(d)) {
                    let from = match self.volume_owed.back() {
                        Some(last) => *last,
                        None => self.known.map(|(v, _)| v),
                    };
                    push(&mut self.volume_owed, from.map(|v| (v + d).clamp(0, 100)));
                }
            }
            "SetMute" => {
                if let Some(m) = payload.get("mute").and_then(Value::as_bool) {
                    push(&mut self.mute_owed, m);
                }
            }
            _ => {}
        }
    }

    /// A device's VolumeState in the context of any event: what it says
    /// now, when no event is owed (an owed one may already be on its way).
    pub(super) fn context(&mut self, meta: &Metadata) {
        if !self.volume_owed.is_empty() || !self.mute_owed.is_empty() {
            return;
        }
        let state = meta.context.iter().flatten().find(|e| {
            e["header"]["namespace"] == "Speaker" && e["header"]["name"] == "VolumeState"
        });
        if let Some(p) = state.map(|e| &e["payload"])
            && let (Some(v), Some(m)) = (integer(p, "volume"), p["muted"].as_bool())
        {
            self.known = Some((v, m));
        }
    }

    /// Check a Speaker event.
    pub(super) fn event(&mut self, meta: &Metadata) -> Result<(), Refusal> {
        let name = meta.name.strip_prefix("Speaker.").unwrap_or(&meta.name);
        if !matches!(name, "VolumeChanged" | "MuteChanged") {
            return Err(Refusal::invalid(format!(
                "Speaker 1.0 has no event {name} (only VolumeChanged and MuteChanged)"
            )));
        }
        let (volume, muted) = check_payload(&meta.name, &meta.payload)?;
        if name == "VolumeChanged" {
            if let Some(owed) = self.volume_owed.front().copied() {
                if let Some(want) = owed
                    && want != volume
                {
                    return Err(Refusal::invalid(format!(
                        "Speaker.VolumeChanged reports volume {volume}, but the volume \
                         directive avs-sim sent before it set {want}"
                    )));
                }
                self.volume_owed.pop_front();
            }
        } else if let Some(want) = self.mute_owed.front().copied() {
            if want != muted {
                return Err(Refusal::invalid(format!(
                    "Speaker.MuteChanged reports muted {muted}, but the SetMute avs-sim sent \
                     before it set {want}"
                )));
            }
            self.mute_owed.pop_front();
        }
        self.known = Some((volume, muted));
        Ok(())
    }
}

fn push<T>(queue: &mut VecDeque<T>, v: T) {
    if queue.len() >= MAX_PENDING {
        queue.pop_front();
    }
    queue.push_back(v);
}

/// A JSON integer (a long): not a float, not a string.
fn integer(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// `{"volume": 0..=100, "muted": bool}`, as the events and the
/// VolumeState context entry carry it.
pub(super) fn check_payload(what: &str, p: &Value) -> Result<(i64, bool), Refusal> {
    let volume = match p.get("volume") {
        None => {
            return Err(Refusal::invalid(format!(
                "{what}: payload.volume is missing"
            )));
        }
        Some(v) => v
            .as_i64()
            .filter(|v| (0..=100).contains(v))
            .ok_or_else(|| {
                Refusal::invalid(format!(
                    "{what}: payload.volume {v} is not a whole number from 0 to 100"
                ))
            })?,
    };
    let muted = p.get("muted").and_then(Value::as_bool).ok_or_else(|| {
        Refusal::invalid(format!("{what}: payload.muted is missing or not a boolean"))
    })?;
    Ok((volume, muted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(name: &str, payload: Value) -> Metadata {
        Metadata {
            name: format!("Speaker.{name}"),
            dialog_request_id: None,
            payload,
            context: None,
            value: Value::Null,
        }
    }

    #[test]
    fn the_event_after_a_set_volume_reports_it() {
        let mut s = Speaker::default();
        s.sent("SetVolume", &json!({"volume": 30}));
        let err = s
            .event(&meta(
                "VolumeChanged",
                json!({"volume": 80, "muted": false}),
            ))
            .unwrap_err();
        assert!(err.description.contains("set 30"), "{err:?}");
        s.event(&meta(
            "VolumeChanged",
            json!({"volume": 30, "muted": false}),
        ))
        .expect("30 after SetVolume 30");
        // Nothing owed now: a local change of any volume is taken.
        s.event(&meta(
            "VolumeChanged",
            json!({"volume": 80, "muted": false}),
        ))
        .expect("a local change");
        s.sent("AdjustVolume", &json!({"volume": 30}));
        s.event(&meta(
            "VolumeChanged",
            json!({"volume": 100, "muted": false}),
        ))
        .expect("80 + 30, clamped");
        s.sent("SetMute", &json!({"mute": true}));
        assert!(
            s.event(&meta("MuteChanged", json!({"volume": 100, "muted": false})))
                .is_err()
        );
        s.event(&meta("MuteChanged", json!({"volume": 100, "muted": true})))
            .expect("muted after SetMute true");
    }

    #[test]
    fn bad_directives_are_owed_nothing_and_bad_payloads_are_refused() {
        let mut s = Speaker::default();
        s.sent("SetVolume", &json!({"volume": 150}));
        s.sent("SetVolume", &json!({"volume": "30"}));
        assert!(s.volume_owed.is_empty());
        for bad in [
            json!({"volume": 101, "muted": false}),
            json!({"volume": 5.5, "muted": false}),
            json!({"volume": "5", "muted": false}),
            json!({"muted": false}),
            json!({"volume": 5}),
            json!({"volume": 5, "muted": "no"}),
        ] {
            assert!(
                s.event(&meta("VolumeChanged", bad.clone())).is_err(),
                "{bad}"
            );
        }
        assert!(
            s.event(&meta("VolumeUp", json!({"volume": 5, "muted": false})))
                .is_err()
        );
    }
}
