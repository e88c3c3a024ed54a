//! A SetAlert's payload checked against the documentation and made into
//! the alert avsd keeps, or the reason it answers SetAlertFailed.

use serde_json::Value;

use super::actor::PAST_DUE_MS;
use super::limits;
use super::store::{Asset, StoredAlert, parse_iso8601};
use super::tone;
use avs_proto::message::AlertType;

/// A SetAlert payload as an alert to keep, or why it cannot be.
pub(crate) fn validate(token: &str, p: &Value, now_ms: i64) -> Result<StoredAlert, String> {
    let kind = match p.get("type").and_then(Value::as_str) {
        Some("TIMER") => AlertType::Timer,
        Some("ALARM") => AlertType::Alarm,
        Some("REMINDER") => AlertType::Reminder,
        Some(other) => return Err(format!("type `{other}` is not TIMER, ALARM or REMINDER")),
        None => return Err("type is missing or not a string".into()),
    };
    let scheduled_time = p
        .get("scheduledTime")
        .and_then(Value::as_str)
        .ok_or("scheduledTime is missing or not a string")?;
    let due_ms = parse_iso8601(scheduled_time)
        .ok_or_else(|| format!("scheduledTime `{scheduled_time}` is not an ISO 8601 time"))?;
    if now_ms - due_ms > PAST_DUE_MS {
        return Err(format!(
            "scheduledTime `{scheduled_time}` is over 30 minutes in the past"
        ));
    }
    let label = match p.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 256 => Some(s.clone()),
        Some(_) => return Err("label is not a string of at most 256 characters".into()),
    };
    let loop_count = match p.get("loopCount") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("loopCount is not a whole number >= 0")?,
        ),
    };
    let loop_pause_ms = match p.get("loopPauseInMilliSeconds") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|ms| *ms <= tone::MAX_RING_MS)
            .ok_or("loopPauseInMilliSeconds is not a whole number of milliseconds up to an hour")?,
    };
    let assets: Vec<Asset> = match p.get("assets") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("assets is not a list of {{assetId, url}}: {e}"))?,
    };
    if assets.len() > limits::MAX_ASSETS {
        return Err(format!("more than {} assets", limits::MAX_ASSETS));
    }
    for a in &assets {
        if url::Url::parse(&a.url)
            .map(|u| u.scheme() != "https")
            .unwrap_or(true)
        {
            return Err(format!("asset {} has no https:// URL", a.asset_id));
        }
    }
    let asset_play_order: Vec<String> = match p.get("assetPlayOrder") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| "assetPlayOrder is not a list of asset ids".to_string())?,
    };
    if let Some(missing) = asset_play_order
        .iter()
        .find(|id| !assets.iter().any(|a| &a.asset_id == *id))
    {
        return Err(format!(
            "assetPlayOrder names {missing}, which is not among the assets"
        ));
    }
    Ok(StoredAlert {
        token: token.to_string(),
        kind,
        scheduled_time: scheduled_time.to_string(),
        due_ms,
        label,
        loop_count,
        loop_pause_ms,
        assets,
        asset_play_order,
        started: false,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agents::alerts::store::format_iso8601;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_set_alert_is_kept_as_avs_gave_it() {
        let p = json!({"token": "t", "type": "REMINDER", "scheduledTime": "2027-01-15T08:00:00+0000",
                       "label": "bins out", "loopCount": 3, "loopPauseInMilliSeconds": 700,
                       "assets": [{"assetId": "a", "url": "https://example.com/a.mp3"}],
                       "assetPlayOrder": ["a", "a"]});
        let a = validate("t", &p, NOW).unwrap();
        assert_eq!(a.kind, AlertType::Reminder);
        assert_eq!(a.scheduled_time, "2027-01-15T08:00:00+0000");
        assert_eq!(a.label.as_deref(), Some("bins out"));
        assert_eq!((a.loop_count, a.loop_pause_ms), (Some(3), 700));
        assert_eq!(a.asset_play_order, ["a", "a"]);
    }

    #[test]
    fn bad_set_alerts_say_why() {
        let soon = format_iso8601(NOW + 60_000);
        let cases = [
            (json!({"type": "NAP", "scheduledTime": soon}), "type"),
            (json!({"scheduledTime": soon}), "type"),
            (
                json!({"type": "TIMER", "scheduledTime": "noon"}),
                "ISO 8601",
            ),
            (json!({"type": "TIMER"}), "scheduledTime"),
            (
                json!({"type": "TIMER", "scheduledTime": format_iso8601(NOW - PAST_DUE_MS - 1000)}),
                "30 minutes",
            ),
            (
                json!({"type": "TIMER", "scheduledTime": soon, "loopCount": -1}),
                "loopCount",
            ),
            (
                json!({"type": "TIMER", "scheduledTime": soon, "assets": [{"assetId": "a", "url": "http://x/a.mp3"}]}),
                "https",
            ),
            (
                json!({"type": "TIMER", "scheduledTime": soon, "assets": [], "assetPlayOrder": ["b"]}),
                "assetPlayOrder",
            ),
        ];
        for (p, why) in cases {
            let e = validate("t", &p, NOW).expect_err(&p.to_string());
            assert!(e.contains(why), "{p}: {e}");
        }
        // A few minutes late is still taken: it rings at once.
        let late = json!({"type": "ALARM", "scheduledTime": format_iso8601(NOW - 300_000)});
        assert!(validate("t", &late, NOW).is_ok());
    }
}
