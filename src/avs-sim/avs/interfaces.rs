//! The interfaces beyond the dialog (Speaker, Alerts, AudioPlayer, …): what
//! a test scripts into the next answer, what the stand-in sent, and each
//! interface's own checks of the events that answer it. Each interface
//! keeps its rules and state in a module of its own; this file only holds
//! them and dispatches by namespace, so adding one is a field and a match
//! arm here.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use super::audio_player::AudioPlayerState;
use super::rules::{Metadata, Refusal};
use super::server::Ctx;
use super::state::{DownMsg, Shared};

/// The most answers a test may script ahead of the Recognizes that take
/// them: the control API is fed from outside, so its queue is bounded.
pub(super) const MAX_SCRIPTED: usize = 16;
/// The most directives one scripted answer may hold.
pub(super) const MAX_SCRIPTED_DIRECTIVES: usize = 8;

/// One directive a test asked for: sent with a fresh messageId and the
/// Recognize's dialogRequestId.
#[derive(Debug, Clone)]
pub(super) struct Scripted {
    /// `header.namespace`.
    pub namespace: String,
    /// `header.name`.
    pub name: String,
    /// `payload`, as given.
    pub payload: Value,
}

/// Everything the interfaces keep; one lock, never held across an await.
#[derive(Default)]
pub(super) struct Interfaces {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Answers to come, each for one Recognize that is answered with a
    /// Speak: its directives follow the Speak.
    script: VecDeque<Vec<Scripted>>,
    /// Speaker: the volume the device reported and the events it owes.
    speaker: super::speaker::Speaker,
    /// AudioPlayer and PlaybackController (`audio_player.rs`).
    audio_player: AudioPlayerState,
    /// The newest attachments pushed, by Content-ID, for a Play that
    /// resumes a `cid:` stream.
    attachments: VecDeque<(String, bytes::Bytes)>,
    /// What devices were told about alerts.
    alerts: super::alerts::Alerts,
}

/// Attachments kept for resuming Plays.
const KEPT_ATTACHMENTS: usize = 4;

impl Interfaces {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an answer; `Err` says why it cannot be taken.
    pub(super) fn script(&self, body: &[u8]) -> Result<usize, String> {
        let parsed = parse_script(body)?;
        let mut inner = self.lock();
        if inner.script.len() >= MAX_SCRIPTED {
            return Err(format!(
                "{MAX_SCRIPTED} answers are already waiting for a Recognize; \
                 POST /reset clears them"
            ));
        }
        inner.script.push_back(parsed);
        Ok(inner.script.len())
    }

    /// The next scripted answer's directives (empty when none).
    pub(super) fn take_script(&self) -> Vec<Scripted> {
        self.lock().script.pop_front().unwrap_or_default()
    }

    /// How many scripted answers wait.
    pub(super) fn scripted(&self) -> usize {
        self.lock().script.len()
    }

    /// Forget scripted answers (`/reset`). What devices were told (alerts
    /// set, volume) is kept, as AVS keeps it.
    pub(super) fn reset(&self) {
        self.lock().script.clear();
    }

    /// A pushed directive carried `data` as Content-ID `cid`.
    pub(super) fn attached(&self, cid: &str, data: &bytes::Bytes) {
        let mut inner = self.lock();
        inner.attachments.retain(|(c, _)| c != cid);
        if inner.attachments.len() >= KEPT_ATTACHMENTS {
            inner.attachments.pop_front();
        }
        inner.attachments.push_back((cid.to_string(), data.clone()));
    }

    /// What AudioPlayer saw, for `/stats`.
    pub(super) fn audio_player_stats(&self) -> Value {
        self.lock().audio_player.stats()
    }
}

/// `{"directives": [{"namespace", "name", "payload"}, …]}`.
fn parse_script(body: &[u8]) -> Result<Vec<Scripted>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}); expected {{\"directives\": [...]}}"))?;
    let list = v.get("directives").and_then(Value::as_array).ok_or(
        "the body must be {\"directives\": [{\"namespace\", \"name\", \"payload\"}, ...]}",
    )?;
    if list.is_empty() || list.len() > MAX_SCRIPTED_DIRECTIVES {
        return Err(format!(
            "an answer holds 1 to {MAX_SCRIPTED_DIRECTIVES} directives (found {})",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            let text = |key: &str| {
                d.get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or(format!("directives[{i}].{key} must be a non-empty string"))
            };
            let payload = d.get("payload").cloned().unwrap_or_else(|| json!({}));
            if !payload.is_object() {
                return Err(format!("directives[{i}].payload must be an object"));
            }
            Ok(Scripted {
                namespace: text("namespace")?,
                name: text("name")?,
                payload,
            })
        })
        .collect()
}

/// An event passed the common checks (order, metadata, context): the
/// checks of its own interface. A refusal is answered as AVS answers it.
pub(super) fn event(ctx: &Ctx, meta: &Metadata) -> Result<(), Refusal> {
    ctx.shared.interfaces.lock().speaker.context(meta);
    match namespace(&meta.name) {
        "Speaker" => ctx.shared.interfaces.lock().speaker.event(meta),
        "Alerts" => ctx.shared.interfaces.lock().alerts.event(meta),
        "AudioPlayer" | "PlaybackController" => {
            let reaction = ctx.shared.interfaces.lock().audio_player.event(meta)?;
            if let Some(r) = reaction {
                let (name, payload) = r.directive();
                // A cid: stream resumes with its attachment again.
                let cid = payload["audioItem"]["stream"]["url"]
                    .as_str()
                    .and_then(|u| u.strip_prefix("cid:"))
                    .map(str::to_string);
                let attachment = cid.and_then(|cid| {
                    let inner = ctx.shared.interfaces.lock();
                    inner
                        .attachments
                        .iter()
                        .find(|(c, _)| *c == cid)
                        .map(|(c, d)| (c.clone(), d.clone()))
                });
                push(&ctx.shared, "AudioPlayer", name, payload, attachment);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Send a directive of the stand-in's own on the downchannel, as AVS does
/// after a button.
fn push(
    shared: &Shared,
    namespace: &str,
    name: &str,
    payload: Value,
    attachment: Option<(String, bytes::Bytes)>,
) {
    let directive = json!({"directive": {
        "header": {"namespace": namespace, "name": name,
                   "messageId": uuid::Uuid::new_v4().to_string()},
        "payload": payload,
    }});
    sent(shared, &directive);
    let json = bytes::Bytes::from(directive.to_string());
    if shared
        .push(DownMsg::Push {
            json,
            attachment,
            tiny: false,
            raw: false,
        })
        .is_none()
    {
        tracing::info!("no downchannel for {namespace}.{name}");
    }
}

/// The stand-in sent `directive` (a whole `{"directive": …}` object) in an
/// answer or on the downchannel: interfaces that check events against
/// what they were told remember it here.
pub(super) fn sent(shared: &Shared, directive: &Value) {
    let header = &directive["directive"]["header"];
    let (Some(ns), Some(name)) = (header["namespace"].as_str(), header["name"].as_str()) else {
        return;
    };
    tracing::debug!("sent {ns}.{name}");
    let payload = &directive["directive"]["payload"];
    let mut inner = shared.interfaces.lock();
    match ns {
        "Speaker" => inner.speaker.sent(name, payload),
        "AudioPlayer" => inner.audio_player.sent(name, payload),
        "Alerts" => inner.alerts.sent(name, payload),
        _ => tracing::trace!("{ns} keeps no record of what it was sent"),
    }
}

/// `Namespace` of `Namespace.Name`.
fn namespace(name: &str) -> &str {
    name.split_once('.').map_or(name, |(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_needs_named_directives_with_object_payloads() {
        let ok = br#"{"directives":[{"namespace":"Speaker","name":"SetVolume","payload":{"volume":30}}]}"#;
        let d = parse_script(ok).expect("valid script");
        assert_eq!(
            (d[0].namespace.as_str(), d[0].name.as_str()),
            ("Speaker", "SetVolume")
        );
        assert_eq!(d[0].payload["volume"], 30);
        for bad in [
            &b"not json"[..],
            br#"{"directives":[]}"#,
            br#"{"directives":[{"namespace":"Speaker"}]}"#,
            br#"{"directives":[{"namespace":"Speaker","name":"SetVolume","payload":3}]}"#,
        ] {
            assert!(
                parse_script(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_queue_is_bounded_and_first_in_first_out() {
        let i = Interfaces::default();
        for n in 0..MAX_SCRIPTED {
            let body = format!(r#"{{"directives":[{{"namespace":"A","name":"N{n}"}}]}}"#);
            assert_eq!(i.script(body.as_bytes()), Ok(n + 1));
        }
        assert!(
            i.script(br#"{"directives":[{"namespace":"A","name":"X"}]}"#)
                .is_err()
        );
        assert_eq!(i.take_script()[0].name, "N0");
        assert_eq!(i.scripted(), MAX_SCRIPTED - 1);
        i.reset();
        assert!(i.take_script().is_empty());
    }
}
