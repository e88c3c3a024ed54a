//! The alerts avsd holds, in one file of the state directory
//! (`alerts/alerts.json`), written atomically and fsynced before AVS is
//! told an alert is set: a kill or a power cut at any moment after that
//! loses nothing. Also the ISO 8601 times AVS sends.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use avs_proto::message::{Alert, AlertType};
use kit::fsutil;

/// The file, under the state directory's `alerts/`.
pub const ALERTS_FILE: &str = "alerts.json";
/// The alerts volume before AVS ever set one (0 to 100).
pub const DEFAULT_VOLUME: u8 = 100;

/// One asset of a SetAlert: a sound AVS would have the alert play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    /// The id `assetPlayOrder` names.
    pub asset_id: String,
    /// Where the sound is.
    pub url: String,
}

/// One alert, as SetAlert gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAlert {
    /// AVS's token for it.
    pub token: String,
    /// Timer, alarm or reminder.
    #[serde(rename = "type")]
    pub kind: AlertType,
    /// The time as AVS wrote it (the context repeats it verbatim).
    pub scheduled_time: String,
    /// The same as Unix milliseconds.
    pub due_ms: i64,
    /// A named timer's or a reminder's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// How often the sound plays; `None`: until stopped (at most an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_count: Option<u32>,
    /// Silence between two plays.
    #[serde(default)]
    pub loop_pause_ms: u64,
    /// The sounds AVS named (avsd rings its own tone; see the README).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<Asset>,
    /// The order to play `assets` in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asset_play_order: Vec<String>,
    /// It has begun to ring (AlertStarted is queued): a restart while it
    /// rings rings it on without telling AVS it started twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub started: bool,
}

impl StoredAlert {
    /// Its entry in `Alerts.AlertsState`.
    pub fn context(&self) -> Alert {
        Alert {
            token: self.token.clone(),
            kind: self.kind,
            scheduled_time: self.scheduled_time.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    volume: Option<u8>,
    #[serde(default)]
    alerts: Vec<StoredAlert>,
}

/// The alerts, earliest first, and the alerts volume, as on disk.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// Earliest due first.
    pub alerts: Vec<StoredAlert>,
    /// The alerts volume, 0 to 100.
    pub volume: u8,
}

impl Store {
    /// Reads the store in `dir` (made if missing). A file that cannot be
    /// read is kept aside as `alerts.json.corrupt` and avsd starts empty,
    /// saying so: AVS sets the alerts again with the next SynchronizeState
    /// it sees without them.
    pub fn open(dir: &Path) -> Store {
        let path = dir.join(ALERTS_FILE);
        let empty = |path: PathBuf| Store {
            path,
            alerts: Vec::new(),
            volume: DEFAULT_VOLUME,
        };
        if let Err(e) = fsutil::ensure_private_dir(dir) {
            tracing::error!(
                "cannot make the alerts directory {}: {e}; alerts will not survive a restart until it can be made",
                dir.display()
            );
        }
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return empty(path),
            Err(e) => {
                tracing::error!(
                    "cannot read the alerts in {}: {e}; starting with none",
                    path.display()
                );
                return empty(path);
            }
        };
        match serde_json::from_slice::<File>(&text) {
            Ok(file) => {
                let mut store = Store {
                    path,
                    alerts: file.alerts,
                    volume: file.volume.unwrap_or(DEFAULT_VOLUME).min(100),
                };
                store.sort();
                store
            }
            Err(e) => {
                let aside = dir.join(format!("{ALERTS_FILE}.corrupt"));
                tracing::error!(
                    "the alerts file {} is not valid ({e}); kept as {} and starting with none",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                empty(path)
            }
        }
    }

    fn sort(&mut self) {
        self.alerts
            .sort_by(|a, b| (a.due_ms, &a.token).cmp(&(b.due_ms, &b.token)));
    }

    /// Writes the store atomically (fsynced file and directory).
    pub fn save(&mut self) -> io::Result<()> {
        self.sort();
        let file = File {
            volume: Some(self.volume),
            alerts: self.alerts.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.path, &text)
    }

    /// The alert with `token`.
    pub fn get(&self, token: &str) -> Option<&StoredAlert> {
        self.alerts.iter().find(|a| a.token == token)
    }

    /// Adds `alert`, replacing one with its token (AVS updates an alert by
    /// setting it again); not saved yet.
    pub fn put(&mut self, alert: StoredAlert) {
        self.alerts.retain(|a| a.token != alert.token);
        self.alerts.push(alert);
        self.sort();
    }

    /// Removes the alert with `token`; not saved yet.
    pub fn remove(&mut self, token: &str) -> Option<StoredAlert> {
        let at = self.alerts.iter().position(|a| a.token == token)?;
        Some(self.alerts.remove(at))
    }

    /// How many alerts of `kind` are held (`None`: all).
    pub fn count(&self, kind: Option<AlertType>) -> usize {
        self.alerts
            .iter()
            .filter(|a| kind.is_none_or(|k| a.kind == k))
            .count()
    }
}

/// Unix milliseconds of an ISO 8601 date and time with an offset, as AVS
/// writes them: `2017-08-09T13:00:00+0000`, `…Z`, `…+02:00`, with or
/// without fractions of a second.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let three: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = three.parse::<i64>().ok()?;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        rest => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            let colon = rest[1..].contains(':');
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            if colon && rest.len() != 6 {
                return None;
            }
            let h: i64 = digits[..2].parse().ok()?;
            let m: i64 = digits[2..].parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS+0000` of Unix milliseconds (whole seconds), the
/// form AVS itself writes; for tests and logs.
pub fn format_iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_forms_avs_writes() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("1970-01-01T00:00:01+0000"), Some(1000));
        assert_eq!(parse_iso8601("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.250Z"), Some(250));
        assert_eq!(
            parse_iso8601("2017-08-09T13:00:00+0000"),
            Some(1_502_283_600_000)
        );
        assert_eq!(
            parse_iso8601("2024-02-29T23:59:59-0130"),
            parse_iso8601("2024-03-01T01:29:59Z")
        );
        for bad in [
            "",
            "tomorrow",
            "2017-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2017-01-01T24:00:00Z",
            "2017-01-01T00:00:00",
            "2017-01-01T00:00:00+25:00",
            "2017-01-01 00:00:00Z",
            "2017-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0, 1_502_283_600_000, 1_798_761_600_000, 951_782_400_000] {
            assert_eq!(parse_iso8601(&format_iso8601(ms)), Some(ms));
        }
    }

    #[test]
    fn the_store_survives_reopening_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let alerts = dir.path().join("alerts");
        let mut store = Store::open(&alerts);
        for (token, due) in [("b", 2000), ("a", 1000)] {
            store.put(StoredAlert {
                token: token.into(),
                kind: AlertType::Timer,
                scheduled_time: format_iso8601(due),
                due_ms: due,
                label: None,
                loop_count: Some(2),
                loop_pause_ms: 0,
                assets: Vec::new(),
                asset_play_order: Vec::new(),
                started: false,
            });
        }
        store.volume = 40;
        store.save().unwrap();
        let again = Store::open(&alerts);
        assert_eq!(again.alerts, store.alerts);
        assert_eq!(again.alerts[0].token, "a");
        assert_eq!(again.volume, 40);
        std::fs::write(alerts.join(ALERTS_FILE), b"{not json").unwrap();
        let fresh = Store::open(&alerts);
        assert!(fresh.alerts.is_empty());
        assert!(alerts.join("alerts.json.corrupt").exists());
    }
}
