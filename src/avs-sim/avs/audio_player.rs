//! AudioPlayer (1.0–1.4) and PlaybackController (1.0–1.1) as AVS checks
//! them: what the stand-in sent in Play directives, and the events that
//! answer them, per token: PlaybackStarted before any progress report or
//! pause, exactly one terminal event (Finished, Stopped, Failed) per
//! played stream, `expectedPreviousToken` honoured, the offsets each event
//! reports against the stand-in's own clock, a pause resumed where it was
//! paused and no progress report while paused, and the progress reports at
//! their documented offsets. The PlaybackController events need the
//! device's context; AVS answers a pause button with `AudioPlayer.Stop`
//! and a play button with a Play that resumes the stream where it stopped,
//! which the stand-in pushes on the downchannel.
//!
//! Every AudioPlayer and PlaybackController event accepted is kept with
//! its arrival time (`audio_player.events` in `/stats`), so tests measure
//! timings against the stand-in's clock.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::rules::{Metadata, Refusal};

/// Plays remembered (the newest); AVS sends a handful per session.
const MAX_PLAYS: usize = 64;
/// Events kept for `/stats`.
const MAX_LOG: usize = 512;
/// How far a reported offset may stray from the stand-in's clock. Generous:
/// the event travels a loaded machine, and AVS only rejects nonsense.
pub(super) const OFFSET_SLACK_MS: i64 = 1500;

/// What a Play told the device.
#[derive(Debug, Clone)]
struct SentPlay {
    url: String,
    offset_ms: u64,
    expected_previous: Option<String>,
    behavior: String,
    delay_ms: Option<u64>,
    interval_ms: Option<u64>,
}

/// How far a resumed offset may be from the paused one.
const RESUME_SLACK_MS: u64 = 100;

/// A stream the device said it plays.
#[derive(Debug, Clone)]
struct Playing {
    /// When PlaybackStarted arrived, and the offset it reported.
    started: Instant,
    start_offset: u64,
    /// Time spent paused so far, and since when it is paused now.
    paused_ms: u64,
    paused_since: Option<Instant>,
    /// The offset PlaybackPaused reported, while paused.
    paused_at: Option<u64>,
    terminal: bool,
    delay_reported: bool,
    /// The highest offset reported so far.
    last_offset: u64,
    /// Since when the device said it stutters (PlaybackStutterStarted).
    stutter_since: Option<Instant>,
}

impl Playing {
    /// The offset the stand-in's clock expects now.
    fn expected_offset(&self, now: Instant) -> i64 {
        let paused = self.paused_ms
            + self
                .paused_since
                .map_or(0, |p| now.duration_since(p).as_millis() as u64);
        let elapsed = now.duration_since(self.started).as_millis() as u64;
        (self.start_offset + elapsed.saturating_sub(paused)) as i64
    }
}

/// One event as the stand-in saw it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Logged {
    /// `Namespace.Name`.
    pub name: String,
    /// The stream's token ("" for PlaybackController and QueueCleared).
    pub token: String,
    /// The offset it reported.
    pub offset_ms: Option<u64>,
    /// When it arrived, in ms since the stand-in started.
    pub at_ms: u64,
    /// PlaybackFailed's `error.type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// StreamMetadataExtracted's `metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// The player's state as the stand-in follows it.
pub(super) struct AudioPlayerState {
    epoch: Instant,
    plays: VecDeque<(String, SentPlay)>,
    playing: HashMap<String, Playing>,
    /// The token that last started.
    last_started: Option<String>,
    log: VecDeque<Logged>,
}

impl Default for AudioPlayerState {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            plays: VecDeque::new(),
            playing: HashMap::new(),
            last_started: None,
            log: VecDeque::new(),
        }
    }
}

impl AudioPlayerState {
    /// The stand-in sent `AudioPlayer.<name>` with `payload`.
    pub(super) fn sent(&mut self, name: &str, payload: &Value) {
        if name != "Play" {
            return;
        }
        let stream = &payload["audioItem"]["stream"];
        let Some(token) = stream["token"].as_str() else {
            return;
        };
        let report = &stream["progressReport"];
        let play = SentPlay {
            url: stream["url"].as_str().unwrap_or_default().to_string(),
            offset_ms: stream["offsetInMilliseconds"].as_u64().unwrap_or(0),
            expected_previous: stream["expectedPreviousToken"].as_str().map(str::to_string),
            behavior: payload["playBehavior"].as_str().unwrap_or_default().into(),
            delay_ms: report["progressReportDelayInMilliseconds"]
                .as_u64()
                .filter(|&d| d > 0),
            interval_ms: report["progressReportIntervalInMilliseconds"]
                .as_u64()
                .filter(|&i| i > 0),
        };
        self.plays.retain(|(t, _)| t != token);
        if self.plays.len() >= MAX_PLAYS {
            self.plays.pop_front();
        }
        self.plays.push_back((token.to_string(), play));
    }

    fn play(&self, token: &str) -> Option<&SentPlay> {
        self.plays.iter().find(|(t, _)| t == token).map(|(_, p)| p)
    }

    /// Check one event of AudioPlayer or PlaybackController; `Ok` keeps it.
    pub(super) fn event(&mut self, meta: &Metadata) -> Result<Option<Reaction>, Refusal> {
        let now = Instant::now();
        let (namespace, name) = meta.name.split_once('.').unwrap_or((&meta.name, ""));
        let reaction = match namespace {
            "PlaybackController" => self.button(name, meta)?,
            _ => {
                self.audio_player(name, &meta.payload, now)?;
                None
            }
        };
        let p = &meta.payload;
        if self.log.len() >= MAX_LOG {
            self.log.pop_front();
        }
        self.log.push_back(Logged {
            name: meta.name.clone(),
            token: p["token"].as_str().unwrap_or_default().to_string(),
            offset_ms: p["offsetInMilliseconds"]
                .as_u64()
                .or(p["currentPlaybackState"]["offsetInMilliseconds"].as_u64()),
            at_ms: now.duration_since(self.epoch).as_millis() as u64,
            error_type: p["error"]["type"].as_str().map(str::to_string),
            metadata: p.get("metadata").cloned(),
        });
        Ok(reaction)
    }

    fn audio_player(&mut self, name: &str, p: &Value, now: Instant) -> Result<(), Refusal> {
        let bad = |what: String| Refusal::invalid(format!("AudioPlayer.{name}: {what}"));
        if name == "PlaybackQueueCleared" {
            return Ok(());
        }
        const KNOWN: &[&str] = &[
            "PlaybackStarted",
            "PlaybackNearlyFinished",
            "ProgressReportDelayElapsed",
            "ProgressReportIntervalElapsed",
            "PlaybackStutterStarted",
            "PlaybackStutterFinished",
            "PlaybackFinished",
            "PlaybackFailed",
            "PlaybackStopped",
            "PlaybackPaused",
            "PlaybackResumed",
            "StreamMetadataExtracted",
        ];
        if !KNOWN.contains(&name) {
            return Err(bad("no such AudioPlayer event".into()));
        }
        let token = p["token"]
            .as_str()
            .ok_or_else(|| bad("payload.token is missing or not a string".into()))?;
        let play = self
            .play(token)
            .cloned()
            .ok_or_else(|| bad(format!("token `{token}` is not one AVS sent in a Play")))?;
        let offset = if name == "PlaybackFailed" {
            let state = &p["currentPlaybackState"];
            if !state["playerActivity"].is_string() || !state["token"].is_string() {
                return Err(bad(
                    "payload.currentPlaybackState needs token and playerActivity".into(),
                ));
            }
            let kind = p["error"]["type"].as_str().unwrap_or_default();
            const TYPES: &[&str] = &[
                "MEDIA_ERROR_UNKNOWN",
                "MEDIA_ERROR_INVALID_REQUEST",
                "MEDIA_ERROR_SERVICE_UNAVAILABLE",
                "MEDIA_ERROR_INTERNAL_SERVER_ERROR",
                "MEDIA_ERROR_INTERNAL_DEVICE_ERROR",
            ];
            if !TYPES.contains(&kind) || !p["error"]["message"].is_string() {
                return Err(bad(format!(
                    "payload.error needs a message and a type of {} (got `{kind}`)",
                    TYPES.join(", ")
                )));
            }
            state["offsetInMilliseconds"].as_u64()
        } else if name == "StreamMetadataExtracted" {
            // Documented: an object of tags, each a string, number or
            // boolean.
            let tags = p["metadata"]
                .as_object()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| bad("payload.metadata is missing, empty or not an object".into()))?;
            if let Some((key, _)) = tags
                .iter()
                .find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean()))
            {
                return Err(bad(format!(
                    "payload.metadata.{key} is not a string, number or boolean"
                )));
            }
            None
        } else {
            Some(p["offsetInMilliseconds"].as_u64().ok_or_else(|| {
                bad("payload.offsetInMilliseconds is missing or not a whole number >= 0".into())
            })?)
        };
        if name == "PlaybackStutterFinished"
            && p["stutterDurationInMilliseconds"].as_u64().is_none()
        {
            return Err(bad(
                "payload.stutterDurationInMilliseconds is missing".into()
            ));
        }
        match name {
            "PlaybackStarted" => {
                if self.playing.get(token).is_some_and(|s| !s.terminal) {
                    return Err(bad(format!(
                        "`{token}` already started and has not finished, stopped or failed"
                    )));
                }
                if play.behavior == "ENQUEUE"
                    && let (Some(expected), Some(last)) =
                        (&play.expected_previous, &self.last_started)
                    && expected != last
                {
                    return Err(bad(format!(
                        "`{token}` was enqueued after `{expected}` (expectedPreviousToken), but \
                         `{last}` played before it"
                    )));
                }
                let start_offset = offset.unwrap_or(0);
                if start_offset.abs_diff(play.offset_ms) > OFFSET_SLACK_MS as u64 {
                    return Err(bad(format!(
                        "offsetInMilliseconds {start_offset}, but the Play asked to start at {}",
                        play.offset_ms
                    )));
                }
                self.playing.insert(
                    token.to_string(),
                    Playing {
                        started: now,
                        start_offset,
                        paused_ms: 0,
                        paused_since: None,
                        paused_at: None,
                        terminal: false,
                        delay_reported: false,
                        last_offset: start_offset,
                        stutter_since: None,
                    },
                );
                self.last_started = Some(token.to_string());
            }
            "PlaybackFailed" => {
                // May come before any start (a stream that cannot be had).
                if let Some(s) = self.playing.get_mut(token) {
                    if s.terminal {
                        return Err(bad(format!("`{token}` already ended")));
                    }
                    s.terminal = true;
                } else {
                    self.playing.insert(
                        token.to_string(),
                        Playing {
                            started: now,
                            start_offset: 0,
                            paused_ms: 0,
                            paused_since: None,
                            paused_at: None,
                            terminal: true,
                            delay_reported: true,
                            last_offset: 0,
                            stutter_since: None,
                        },
                    );
                }
            }
            _ => {
                let s = self
                    .playing
                    .get_mut(token)
                    .filter(|s| !s.terminal)
                    .ok_or_else(|| {
                        bad(format!(
                            "`{token}` is not playing: PlaybackStarted comes first, and nothing \
                         after its PlaybackFinished, PlaybackStopped or PlaybackFailed"
                        ))
                    })?;
                // An event may wait behind a Recognize on the device, so
                // its offset may lag the clock; it can never run ahead of
                // it, nor go back.
                if let Some(offset) = offset {
                    let expected = s.expected_offset(now);
                    if offset as i64 > expected + OFFSET_SLACK_MS {
                        return Err(bad(format!(
                            "offsetInMilliseconds {offset}, but only {expected} ms have played \
                             by AVS's clock since PlaybackStarted"
                        )));
                    }
                    if offset + 50 < s.last_offset {
                        return Err(bad(format!(
                            "offsetInMilliseconds {offset} went back (it was {})",
                            s.last_offset
                        )));
                    }
                    s.last_offset = s.last_offset.max(offset);
                }
                match name {
                    "PlaybackPaused" => {
                        if s.paused_since.is_some() {
                            return Err(bad("already paused: PlaybackResumed comes first".into()));
                        }
                        s.paused_since = Some(now);
                        s.paused_at = offset;
                    }
                    "PlaybackResumed" => {
                        let Some(p) = s.paused_since.take() else {
                            return Err(bad("not paused: no PlaybackPaused came before it".into()));
                        };
                        s.paused_ms += now.duration_since(p).as_millis() as u64;
                        // A pause for focus carries on where it was.
                        if let (Some(at), Some(o)) = (s.paused_at.take(), offset)
                            && o.abs_diff(at) > RESUME_SLACK_MS
                        {
                            return Err(bad(format!(
                                "resumed at offsetInMilliseconds {o}, but paused at {at}: \
                                 playback carries on where it was paused"
                            )));
                        }
                    }
                    "ProgressReportDelayElapsed" | "ProgressReportIntervalElapsed"
                        if s.paused_since.is_some() =>
                    {
                        return Err(bad(
                            "a progress report while paused: the offset does not move".into(),
                        ));
                    }
                    "ProgressReportDelayElapsed" => {
                        let Some(delay) = play.delay_ms else {
                            return Err(bad("the Play asked for no progressReportDelay".into()));
                        };
                        if s.delay_reported {
                            return Err(bad("the delay was reported already".into()));
                        }
                        s.delay_reported = true;
                        if offset.is_some_and(|o| o + 50 < delay) {
                            return Err(bad(format!(
                                "sent at {} ms, before the delay of {delay} ms",
                                offset.unwrap_or(0)
                            )));
                        }
                    }
                    "ProgressReportIntervalElapsed" if play.interval_ms.is_none() => {
                        return Err(bad("the Play asked for no progressReportInterval".into()));
                    }
                    "PlaybackStutterStarted" => {
                        if s.stutter_since.is_some() {
                            return Err(bad(
                                "a stutter is already on: PlaybackStutterFinished comes first"
                                    .into(),
                            ));
                        }
                        s.stutter_since = Some(now);
                    }
                    "PlaybackStutterFinished" => {
                        let since = s.stutter_since.ok_or_else(|| {
                            bad("no PlaybackStutterStarted came before it".into())
                        })?;
                        let said = p["stutterDurationInMilliseconds"].as_u64().unwrap_or(0);
                        let seen = now.duration_since(since).as_millis() as u64;
                        if said > seen + OFFSET_SLACK_MS as u64 {
                            return Err(bad(format!(
                                "stutterDurationInMilliseconds {said}, but only {seen} ms passed \
                                 since PlaybackStutterStarted"
                            )));
                        }
                        s.stutter_since = None;
                    }
                    "PlaybackFinished" | "PlaybackStopped" => s.terminal = true,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn button(&mut self, name: &str, meta: &Metadata) -> Result<Option<Reaction>, Refusal> {
        let bad = |what: String| Refusal::invalid(format!("PlaybackController.{name}: {what}"));
        let state = meta
            .context
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|e| {
                e["header"]["namespace"] == "AudioPlayer" && e["header"]["name"] == "PlaybackState"
            })
            .map(|e| e["payload"].clone())
            .ok_or_else(|| {
                bad("the event needs the device's context, with AudioPlayer.PlaybackState".into())
            })?;
        let token = state["token"].as_str().unwrap_or_default().to_string();
        let offset = state["offsetInMilliseconds"].as_u64().unwrap_or(0);
        Ok(match name {
            "PauseCommandIssued" if !token.is_empty() => Some(Reaction::Stop),
            "PlayCommandIssued" if state["playerActivity"] != "PLAYING" => {
                self.play(&token).map(|p| Reaction::Resume {
                    token: token.clone(),
                    url: p.url.clone(),
                    offset_ms: offset,
                })
            }
            "PlayCommandIssued"
            | "PauseCommandIssued"
            | "NextCommandIssued"
            | "PreviousCommandIssued"
            | "ButtonCommandIssued"
            | "ToggleCommandIssued" => None,
            _ => return Err(bad("no such PlaybackController event".into())),
        })
    }

    /// The events seen, for `/stats`.
    pub(super) fn stats(&self) -> Value {
        json!({ "events": self.log })
    }
}

/// What AVS does after a button: a directive for the downchannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reaction {
    /// `AudioPlayer.Stop`.
    Stop,
    /// `AudioPlayer.Play` (REPLACE_ALL) of the same stream from `offset_ms`.
    Resume {
        /// The stream's token.
        token: String,
        /// Its URL.
        url: String,
        /// Where it stopped.
        offset_ms: u64,
    },
}

impl Reaction {
    /// The directive's name and payload.
    pub(super) fn directive(&self) -> (&'static str, Value) {
        match self {
            Reaction::Stop => ("Stop", json!({})),
            Reaction::Resume {
                token,
                url,
                offset_ms,
            } => (
                "Play",
                json!({
                    "playBehavior": "REPLACE_ALL",
                    "audioItem": {
                        "audioItemId": token,
                        "stream": {
                            "url": url,
                            "offsetInMilliseconds": offset_ms,
                            "token": token,
                        }
                    }
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, payload: Value) -> Metadata {
        Metadata {
            name: name.into(),
            dialog_request_id: None,
            payload,
            context: None,
            value: Value::Null,
        }
    }

    fn play(state: &mut AudioPlayerState, token: &str, behavior: &str, expected: Option<&str>) {
        let mut stream = json!({"url": "cid:x", "token": token,
            "progressReport": {"progressReportDelayInMilliseconds": 1000}});
        if let Some(e) = expected {
            stream["expectedPreviousToken"] = json!(e);
        }
        state.sent(
            "Play",
            &json!({"playBehavior": behavior, "audioItem": {"stream": stream}}),
        );
    }

    fn at(token: &str, offset: u64) -> Value {
        json!({"token": token, "offsetInMilliseconds": offset})
    }

    #[test]
    fn started_comes_first_and_one_terminal_event_ends_a_stream() {
        let mut s = AudioPlayerState::default();
        play(&mut s, "a", "REPLACE_ALL", None);
        assert!(
            s.event(&meta("AudioPlayer.PlaybackNearlyFinished", at("a", 0)))
                .is_err()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStarted", at("unknown", 0)))
                .is_err()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStarted", at("a", 0)))
                .is_ok()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStarted", at("a", 0)))
                .is_err()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackFinished", at("a", 0)))
                .is_ok()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStopped", at("a", 0)))
                .is_err()
        );
        assert!(
            s.event(&meta("AudioPlayer.ProgressReportDelayElapsed", at("a", 0)))
                .is_err()
        );
    }

    #[test]
    fn stutters_pair_up_and_metadata_is_tags() {
        let mut s = AudioPlayerState::default();
        play(&mut s, "a", "REPLACE_ALL", None);
        let ev = |s: &mut AudioPlayerState, name: &str, p: Value| {
            s.event(&meta(&format!("AudioPlayer.{name}"), p)).is_ok()
        };
        assert!(
            !ev(&mut s, "PlaybackStutterStarted", at("a", 0)),
            "not started"
        );
        assert!(ev(&mut s, "PlaybackStarted", at("a", 0)));
        let finished = json!({"token": "a", "offsetInMilliseconds": 0,
            "stutterDurationInMilliseconds": 10});
        assert!(
            !ev(&mut s, "PlaybackStutterFinished", finished.clone()),
            "none started"
        );
        assert!(ev(&mut s, "PlaybackStutterStarted", at("a", 0)));
        assert!(!ev(&mut s, "PlaybackStutterStarted", at("a", 0)), "twice");
        let long = json!({"token": "a", "offsetInMilliseconds": 0,
            "stutterDurationInMilliseconds": 60_000});
        assert!(
            !ev(&mut s, "PlaybackStutterFinished", long),
            "longer than it was"
        );
        assert!(
            !ev(&mut s, "PlaybackStutterFinished", at("a", 0)),
            "no duration"
        );
        assert!(ev(&mut s, "PlaybackStutterFinished", finished));
        let tags = |m: Value| json!({"token": "a", "metadata": m});
        assert!(ev(
            &mut s,
            "StreamMetadataExtracted",
            tags(json!({"title": "T", "n": 1}))
        ));
        assert!(!ev(&mut s, "StreamMetadataExtracted", tags(json!({}))));
        assert!(!ev(
            &mut s,
            "StreamMetadataExtracted",
            tags(json!({"t": ["x"]}))
        ));
    }

    #[test]
    fn offsets_are_checked_against_the_clock_and_the_delay() {
        let mut s = AudioPlayerState::default();
        play(&mut s, "a", "REPLACE_ALL", None);
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStarted", at("a", 0)))
                .is_ok()
        );
        let far = OFFSET_SLACK_MS as u64 + 5000;
        assert!(
            s.event(&meta("AudioPlayer.PlaybackNearlyFinished", at("a", far)))
                .is_err()
        );
        assert!(
            s.event(&meta("AudioPlayer.ProgressReportDelayElapsed", at("a", 10)))
                .is_err(),
            "a delay of 1000 ms is not elapsed at 10 ms"
        );
        assert!(
            s.event(&meta(
                "AudioPlayer.ProgressReportIntervalElapsed",
                at("a", 10)
            ))
            .is_err(),
            "no interval was asked for"
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackPaused", at("a", 400)))
                .is_ok()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackResumed", at("a", 100)))
                .is_err(),
            "the offset went back"
        );
    }

    #[test]
    fn expected_previous_token_is_honoured() {
        let mut s = AudioPlayerState::default();
        play(&mut s, "a", "REPLACE_ALL", None);
        play(&mut s, "b", "REPLACE_ALL", None);
        play(&mut s, "c", "ENQUEUE", Some("a"));
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStarted", at("b", 0)))
                .is_ok()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackFinished", at("b", 0)))
                .is_ok()
        );
        assert!(
            s.event(&meta("AudioPlayer.PlaybackStarted", at("c", 0)))
                .is_err(),
            "c follows a, not b"
        );
    }

    #[test]
    fn buttons_need_context_and_pause_is_answered_with_stop() {
        let mut s = AudioPlayerState::default();
        play(&mut s, "a", "REPLACE_ALL", None);
        assert!(
            s.event(&meta("PlaybackController.PauseCommandIssued", json!({})))
                .is_err()
        );
        let mut m = meta("PlaybackController.PauseCommandIssued", json!({}));
        m.context = Some(vec![json!({
            "header": {"namespace": "AudioPlayer", "name": "PlaybackState"},
            "payload": {"token": "a", "offsetInMilliseconds": 1200, "playerActivity": "PLAYING"}
        })]);
        assert_eq!(s.event(&m).ok().flatten(), Some(Reaction::Stop));
        if let Some(c) = m.context.as_mut() {
            c[0]["payload"]["playerActivity"] = json!("STOPPED");
        }
        m.name = "PlaybackController.PlayCommandIssued".into();
        let Some(Some(Reaction::Resume { offset_ms, .. })) = s.event(&m).ok() else {
            panic!("play resumes");
        };
        assert_eq!(offset_ms, 1200);
    }
}
