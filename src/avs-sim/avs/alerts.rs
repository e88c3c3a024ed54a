//! The Alerts interface, as strict as AVS: what the stand-in told the
//! device (SetAlert, DeleteAlert, DeleteAlerts) and the checks of the
//! events that answer it.
//!
//! - `SetAlertSucceeded` / `SetAlertFailed` `{"token"}`: once per SetAlert
//!   the stand-in sent with that token, nothing else in the payload.
//! - `DeleteAlertSucceeded` / `DeleteAlertFailed` `{"token"}` and
//!   `DeleteAlertsSucceeded` / `DeleteAlertsFailed` `{"tokens"}`: once per
//!   DeleteAlert / DeleteAlerts sent, with its token(s).
//! - `AlertStarted` `{"token"}`: an alert the device said it set, started
//!   once; `AlertStopped` after it (or, for an alert that is past due, on
//!   its own: how a device reports an alert it dropped unrung), once;
//!   `AlertEnteredForeground` / `AlertEnteredBackground` only between the
//!   two.
//! - `VolumeChanged` `{"volume"}`: a whole number from 0 to 100.
//! - The context's `AlertsState`: `allAlerts` and `activeAlerts` lists of
//!   `{token, type, scheduledTime}`, each active alert also in all.
//!
//! It also serves alert sounds as AVS's CDN does, over the same HTTPS and
//! without a token: `GET /alerts/assets/chime.mp3` (the stand-in's spoken
//! answer, an MP3 made by the project); any other name is 404.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::rules::{Metadata, Refusal};

/// Where the stand-in's alert sounds are.
pub const ASSETS_PATH: &str = "/alerts/assets/";

/// An alert sound request: its status and body, or `None` for any other
/// path.
pub(super) fn asset(method: &http::Method, path: &str) -> Option<(u16, Option<&'static [u8]>)> {
    let name = path.strip_prefix(ASSETS_PATH)?;
    if method != http::Method::GET {
        return Some((405, None));
    }
    match name {
        "chime.mp3" => Some((200, Some(super::BUILTIN_ANSWER_MP3))),
        _ => Some((404, None)),
    }
}

/// Alert tokens remembered at most (the stand-in is fed from outside).
const MAX_TRACKED: usize = 4096;

/// Where one alert the stand-in set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// SetAlert sent; no answer yet.
    Setting,
    /// SetAlertFailed came.
    Refused,
    /// SetAlertSucceeded came.
    Set,
    /// AlertStarted came.
    Started,
    /// AlertStopped came.
    Stopped,
}

#[derive(Debug, Clone)]
struct Tracked {
    phase: Phase,
    /// Unix seconds of its scheduledTime, when the stand-in could read it.
    due: Option<i64>,
    /// SetAlerts sent with this token and not yet answered.
    setting: u32,
}

/// What the stand-in told devices about alerts.
#[derive(Debug, Default)]
pub(super) struct Alerts {
    alerts: HashMap<String, Tracked>,
    /// DeleteAlert tokens sent and not yet answered.
    deleting: Vec<String>,
    /// DeleteAlerts token lists sent and not yet answered.
    deleting_many: Vec<Vec<String>>,
}

fn refuse(name: &str, what: String) -> Refusal {
    Refusal::invalid(format!("{name}: {what}"))
}

/// The payload's `token`, and that it holds nothing else.
fn only_token<'a>(name: &str, p: &'a Value) -> Result<&'a str, Refusal> {
    let obj = p
        .as_object()
        .ok_or_else(|| refuse(name, "the payload is not an object".into()))?;
    if let Some(extra) = obj.keys().find(|k| *k != "token") {
        return Err(refuse(
            name,
            format!("payload.{extra} is not a field of this event (only token)"),
        ));
    }
    obj.get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            refuse(
                name,
                "payload.token is missing or not a non-empty string".into(),
            )
        })
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Alerts {
    /// The stand-in sent an Alerts directive with this name and payload.
    pub(super) fn sent(&mut self, name: &str, payload: &Value) {
        let token = payload.get("token").and_then(Value::as_str);
        match (name, token) {
            ("SetAlert", Some(t)) if !t.is_empty() => {
                if self.alerts.len() >= MAX_TRACKED && !self.alerts.contains_key(t) {
                    return;
                }
                let due = payload
                    .get("scheduledTime")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                let entry = self.alerts.entry(t.to_string()).or_insert(Tracked {
                    phase: Phase::Setting,
                    due,
                    setting: 0,
                });
                entry.setting += 1;
                entry.due = due;
                if entry.phase != Phase::Started {
                    entry.phase = Phase::Setting;
                }
            }
            ("DeleteAlert", Some(t)) if self.deleting.len() < MAX_TRACKED => {
                self.deleting.push(t.to_string());
            }
            ("DeleteAlerts", _) if self.deleting_many.len() < MAX_TRACKED => {
                if let Some(list) = payload.get("tokens").and_then(Value::as_array) {
                    let tokens = list
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect();
                    self.deleting_many.push(tokens);
                }
            }
            _ => {}
        }
    }

    /// Check an `Alerts.*` event; remember it once it passes.
    pub(super) fn event(&mut self, meta: &Metadata) -> Result<(), Refusal> {
        let name = meta.name.as_str();
        let short = name.strip_prefix("Alerts.").unwrap_or(name);
        let p = &meta.payload;
        match short {
            "SetAlertSucceeded" | "SetAlertFailed" => {
                let token = only_token(name, p)?;
                let a = self
                    .alerts
                    .get_mut(token)
                    .filter(|a| a.setting > 0)
                    .ok_or_else(|| {
                        refuse(
                            name,
                            format!("no SetAlert with token {token} waits for an answer"),
                        )
                    })?;
                a.setting -= 1;
                if a.phase != Phase::Started {
                    a.phase = if short == "SetAlertSucceeded" {
                        Phase::Set
                    } else {
                        Phase::Refused
                    };
                }
            }
            "DeleteAlertSucceeded" | "DeleteAlertFailed" => {
                let token = only_token(name, p)?;
                let at = self
                    .deleting
                    .iter()
                    .position(|t| t == token)
                    .ok_or_else(|| {
                        refuse(
                            name,
                            format!("no DeleteAlert with token {token} waits for an answer"),
                        )
                    })?;
                self.deleting.remove(at);
            }
            "DeleteAlertsSucceeded" | "DeleteAlertsFailed" => {
                let obj = p
                    .as_object()
                    .ok_or_else(|| refuse(name, "the payload is not an object".into()))?;
                if let Some(extra) = obj.keys().find(|k| *k != "tokens") {
                    return Err(refuse(
                        name,
                        format!("payload.{extra} is not a field of this event (only tokens)"),
                    ));
                }
                let tokens: Vec<String> = obj
                    .get("tokens")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .ok_or_else(|| {
                        refuse(name, "payload.tokens is not a list of strings".into())
                    })?;
                let at = self
                    .deleting_many
                    .iter()
                    .position(|t| *t == tokens)
                    .ok_or_else(|| {
                        refuse(
                            name,
                            format!("no DeleteAlerts with tokens {tokens:?} waits for an answer"),
                        )
                    })?;
                self.deleting_many.remove(at);
            }
            "AlertStarted" => {
                let token = only_token(name, p)?;
                let a = self.known(name, token)?;
                match a.phase {
                    Phase::Set => a.phase = Phase::Started,
                    Phase::Started => {
                        return Err(refuse(name, format!("alert {token} was already started")));
                    }
                    other => {
                        return Err(refuse(
                            name,
                            format!("alert {token} cannot start: it is {other:?}, not set"),
                        ));
                    }
                }
            }
            "AlertStopped" => {
                let token = only_token(name, p)?;
                let a = self.known(name, token)?;
                match a.phase {
                    Phase::Started => a.phase = Phase::Stopped,
                    // Dropped unrung: only once its time has passed.
                    Phase::Set if a.due.is_some_and(|due| due <= now_unix()) => {
                        a.phase = Phase::Stopped;
                    }
                    Phase::Set => {
                        return Err(refuse(
                            name,
                            format!(
                                "alert {token} stopped before AlertStarted and before its time"
                            ),
                        ));
                    }
                    other => {
                        return Err(refuse(
                            name,
                            format!("alert {token} cannot stop: it is {other:?}"),
                        ));
                    }
                }
            }
            "AlertEnteredForeground" | "AlertEnteredBackground" => {
                let token = only_token(name, p)?;
                let a = self.known(name, token)?;
                if a.phase != Phase::Started {
                    return Err(refuse(
                        name,
                        format!("alert {token} is not sounding (it is {:?})", a.phase),
                    ));
                }
            }
            "VolumeChanged" => {
                let volume = p.get("volume").and_then(Value::as_i64);
                let only = p.as_object().is_some_and(|o| o.len() == 1);
                if !only || !volume.is_some_and(|v| (0..=100).contains(&v)) {
                    return Err(refuse(
                        name,
                        "the payload must be {\"volume\": 0 to 100}".into(),
                    ));
                }
            }
            other => {
                return Err(refuse(name, format!("Alerts has no event named {other}")));
            }
        }
        Ok(())
    }

    fn known(&mut self, name: &str, token: &str) -> Result<&mut Tracked, Refusal> {
        self.alerts
            .get_mut(token)
            .ok_or_else(|| refuse(name, format!("no alert with token {token} was ever set")))
    }
}

/// `Alerts.AlertsState`'s payload, as documented.
pub(super) fn check_state(p: &Value) -> Result<(), String> {
    let list = |key: &str| -> Result<Vec<(String, String, String)>, String> {
        let items = p
            .get(key)
            .and_then(Value::as_array)
            .ok_or(format!("payload.{key} is missing or not a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let field = |f: &str| {
                    a.get(f)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .ok_or(format!("payload.{key}[{i}].{f} is missing or not a string"))
                };
                let kind = field("type")?;
                if !matches!(kind.as_str(), "TIMER" | "ALARM" | "REMINDER") {
                    return Err(format!(
                        "payload.{key}[{i}].type `{kind}` is not TIMER, ALARM or REMINDER"
                    ));
                }
                let time = field("scheduledTime")?;
                if parse_time(&time).is_none() {
                    return Err(format!(
                        "payload.{key}[{i}].scheduledTime `{time}` is not an ISO 8601 time"
                    ));
                }
                Ok((field("token")?, kind, time))
            })
            .collect()
    };
    let all = list("allAlerts")?;
    let active = list("activeAlerts")?;
    if let Some(a) = active.iter().find(|a| !all.contains(a)) {
        return Err(format!(
            "activeAlerts holds {}, which allAlerts does not",
            a.0
        ));
    }
    Ok(())
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM|±HHMM)`.
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |a: usize, z: usize| -> Option<i64> {
        let t = s.get(a..z)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, se) = (
        n(0, 4)?,
        n(5, 7)?,
        n(8, 10)?,
        n(11, 13)?,
        n(14, 16)?,
        n(17, 19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (digits[..2].parse::<i64>().ok()? * 3600 + digits[2..].parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (proleptic Gregorian).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(name: &str, payload: Value) -> Metadata {
        Metadata {
            name: format!("Alerts.{name}"),
            dialog_request_id: None,
            payload,
            context: None,
            value: Value::Null,
        }
    }

    fn set(a: &mut Alerts, token: &str, due: &str) {
        a.sent(
            "SetAlert",
            &json!({"token": token, "type": "TIMER", "scheduledTime": due}),
        );
    }

    #[test]
    fn an_alert_is_answered_started_and_stopped_once_in_order() {
        let mut a = Alerts::default();
        let t = json!({"token": "t1"});
        assert!(
            a.event(&meta("AlertStarted", t.clone())).is_err(),
            "unknown"
        );
        set(&mut a, "t1", "2099-01-01T00:00:00+0000");
        assert!(
            a.event(&meta("AlertStarted", t.clone())).is_err(),
            "not set yet"
        );
        a.event(&meta("SetAlertSucceeded", t.clone())).unwrap();
        assert!(
            a.event(&meta("SetAlertSucceeded", t.clone())).is_err(),
            "twice"
        );
        assert!(
            a.event(&meta("AlertStopped", t.clone())).is_err(),
            "stopped before started and before its time"
        );
        assert!(a.event(&meta("AlertEnteredBackground", t.clone())).is_err());
        a.event(&meta("AlertStarted", t.clone())).unwrap();
        assert!(a.event(&meta("AlertStarted", t.clone())).is_err(), "twice");
        a.event(&meta("AlertEnteredBackground", t.clone())).unwrap();
        a.event(&meta("AlertEnteredForeground", t.clone())).unwrap();
        a.event(&meta("AlertStopped", t.clone())).unwrap();
        assert!(a.event(&meta("AlertStopped", t)).is_err(), "twice");
    }

    #[test]
    fn a_past_due_alert_may_stop_unstarted() {
        let mut a = Alerts::default();
        let t = json!({"token": "old"});
        set(&mut a, "old", "2001-01-01T00:00:00Z");
        a.event(&meta("SetAlertSucceeded", t.clone())).unwrap();
        a.event(&meta("AlertStopped", t)).unwrap();
    }

    #[test]
    fn payloads_are_as_documented() {
        let mut a = Alerts::default();
        set(&mut a, "t", "2099-01-01T00:00:00Z");
        assert!(
            a.event(&meta("SetAlertSucceeded", json!({"token": "t", "x": 1})))
                .is_err()
        );
        assert!(a.event(&meta("SetAlertSucceeded", json!({}))).is_err());
        assert!(
            a.event(&meta("VolumeChanged", json!({"volume": 101})))
                .is_err()
        );
        a.event(&meta("VolumeChanged", json!({"volume": 30})))
            .unwrap();
        assert!(
            a.event(&meta("DeleteAlertSucceeded", json!({"token": "t"})))
                .is_err()
        );
        a.sent("DeleteAlerts", &json!({"tokens": ["t", "u"]}));
        assert!(
            a.event(&meta("DeleteAlertsSucceeded", json!({"tokens": ["t"]})))
                .is_err()
        );
        a.event(&meta(
            "DeleteAlertsSucceeded",
            json!({"tokens": ["t", "u"]}),
        ))
        .unwrap();
        assert!(a.event(&meta("Nonsense", json!({}))).is_err());
    }

    #[test]
    fn the_context_state_is_checked() {
        let ok = json!({"allAlerts": [{"token": "a", "type": "ALARM", "scheduledTime": "2030-01-01T07:00:00+0000"}],
                        "activeAlerts": []});
        check_state(&ok).unwrap();
        for bad in [
            json!({"allAlerts": []}),
            json!({"allAlerts": [{"token": "a", "type": "NAP", "scheduledTime": "2030-01-01T07:00:00Z"}], "activeAlerts": []}),
            json!({"allAlerts": [{"token": "a", "type": "ALARM", "scheduledTime": "soon"}], "activeAlerts": []}),
            json!({"allAlerts": [], "activeAlerts": [{"token": "a", "type": "ALARM", "scheduledTime": "2030-01-01T07:00:00Z"}]}),
        ] {
            assert!(check_state(&bad).is_err(), "{bad}");
        }
        assert_eq!(parse_time("1970-01-02T00:00:00+0100"), Some(86_400 - 3600));
    }
}
