//! Events avsd sends and the context entries that go with them (§D.1, §D.2,
//! §D.5). Each event gets a fresh messageId; the caller decides whether it
//! starts a dialog (dialogRequestId) and whether it carries context.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Header;

/// A fresh dialogRequestId for a Recognize event.
pub fn new_dialog_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An event, ready to be written as the `metadata` part of a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Present only on events that need it (Recognize, SynchronizeState,
    /// ExceptionEncountered, PlaybackController), omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<ContextEntry>>,
    event: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct EventBody {
    header: Header,
    payload: Value,
}

impl Event {
    /// `namespace.name` with a new UUID messageId, payload `{}` and no context.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            context: None,
            event: EventBody {
                header: Header {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    message_id: uuid::Uuid::new_v4().to_string(),
                    dialog_request_id: None,
                },
                payload: json!({}),
            },
        }
    }

    /// Marks the event as the start of a dialog.
    pub fn with_dialog_request_id(mut self, id: impl Into<String>) -> Self {
        self.event.header.dialog_request_id = Some(id.into());
        self
    }

    /// Replaces the payload.
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.event.payload = payload;
        self
    }

    /// Attaches the device's context.
    pub fn with_context(mut self, context: Vec<ContextEntry>) -> Self {
        self.context = Some(context);
        self
    }

    /// The header, e.g. to log the messageId.
    pub fn header(&self) -> &Header {
        &self.event.header
    }

    /// The metadata JSON, `{"context":[..],"event":{..}}`.
    pub fn to_json(&self) -> String {
        // Serializing a tree of strings, numbers and `Value`s cannot fail;
        // the fallback only keeps this function free of a panic path.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// `System.SynchronizeState` with the full context, after each connect.
    pub fn synchronize_state(context: Vec<ContextEntry>) -> Self {
        Self::new("System", "SynchronizeState").with_context(context)
    }

    /// `System.UserInactivityReport`, sent hourly.
    pub fn user_inactivity_report(inactive_seconds: u64) -> Self {
        Self::new("System", "UserInactivityReport")
            .with_payload(json!({ "inactiveTimeInSeconds": inactive_seconds }))
    }

    /// `SpeechRecognizer.Recognize`, which starts a dialog; `initiator` is
    /// the object to send (ExpectSpeech's, verbatim, when answering one).
    pub fn recognize(
        dialog_request_id: &str,
        profile: &str,
        format: &str,
        initiator: Option<Value>,
        context: Vec<ContextEntry>,
    ) -> Self {
        let mut payload = json!({ "profile": profile, "format": format });
        if let (Some(initiator), Some(map)) = (initiator, payload.as_object_mut()) {
            map.insert("initiator".to_owned(), initiator);
        }
        Self::new("SpeechRecognizer", "Recognize")
            .with_dialog_request_id(dialog_request_id)
            .with_payload(payload)
            .with_context(context)
    }

    /// `SpeechRecognizer.ExpectSpeechTimedOut`.
    pub fn expect_speech_timed_out() -> Self {
        Self::new("SpeechRecognizer", "ExpectSpeechTimedOut")
    }

    /// `SpeechSynthesizer.SpeechStarted` / `SpeechFinished` /
    /// `SpeechInterrupted`, which carry only the Speak token.
    pub fn speech(name: &str, token: &str) -> Self {
        Self::new("SpeechSynthesizer", name).with_payload(json!({ "token": token }))
    }

    /// `System.ExceptionEncountered`: a directive avsd could not handle,
    /// echoed back as it arrived.
    pub fn exception_encountered(
        unparsed_directive: &str,
        error_type: ExceptionErrorType,
        message: &str,
        context: Vec<ContextEntry>,
    ) -> Self {
        Self::new("System", "ExceptionEncountered")
            .with_payload(json!({
                "unparsedDirective": unparsed_directive,
                "error": { "type": error_type, "message": message },
            }))
            .with_context(context)
    }
}

/// The `error.type` of `System.ExceptionEncountered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExceptionErrorType {
    /// The directive was malformed or carried a value avsd cannot use.
    UnexpectedInformationReceived,
    /// avsd does not support the directive.
    UnsupportedOperation,
    /// avsd failed while handling it.
    InternalError,
}

/// One entry of an event's `context` array.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextEntry {
    /// `AudioPlayer.PlaybackState`.
    PlaybackState(PlaybackState),
    /// `Speaker.VolumeState`.
    VolumeState(VolumeState),
    /// `SpeechSynthesizer.SpeechState`.
    SpeechState(SpeechState),
    /// `Alerts.AlertsState`.
    AlertsState(AlertsState),
    /// Any other interface's state, e.g. `Notifications.IndicatorState`.
    /// (`SpeechRecognizer.RecognizerState` was removed in SpeechRecognizer
    /// 2.3, so it has no typed variant.)
    Other {
        /// Interface.
        namespace: String,
        /// State name.
        name: String,
        /// State object.
        payload: Value,
    },
}

impl ContextEntry {
    /// The entries of a device that is doing nothing: used at start-up and
    /// by tests.
    pub fn idle(volume: u8) -> Vec<ContextEntry> {
        vec![
            Self::PlaybackState(PlaybackState::default()),
            Self::VolumeState(VolumeState {
                volume,
                muted: false,
            }),
            Self::SpeechState(SpeechState::default()),
            Self::AlertsState(AlertsState::default()),
        ]
    }
}

#[derive(Serialize)]
struct ContextHeader<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl ContextEntry {
    /// The entry's `(namespace, name)`: the namespace is the interface that
    /// reports it, which must be one the device declared (§D.2).
    pub fn header(&self) -> (&str, &str) {
        match self {
            Self::PlaybackState(_) => ("AudioPlayer", "PlaybackState"),
            Self::VolumeState(_) => ("Speaker", "VolumeState"),
            Self::SpeechState(_) => ("SpeechSynthesizer", "SpeechState"),
            Self::AlertsState(_) => ("Alerts", "AlertsState"),
            Self::Other {
                namespace, name, ..
            } => (namespace.as_str(), name.as_str()),
        }
    }
}

impl Serialize for ContextEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entry = serializer.serialize_struct("ContextEntry", 2)?;
        let (namespace, name) = self.header();
        entry.serialize_field("header", &ContextHeader { namespace, name })?;
        match self {
            Self::PlaybackState(p) => entry.serialize_field("payload", p)?,
            Self::VolumeState(p) => entry.serialize_field("payload", p)?,
            Self::SpeechState(p) => entry.serialize_field("payload", p)?,
            Self::AlertsState(p) => entry.serialize_field("payload", p)?,
            Self::Other { payload, .. } => entry.serialize_field("payload", payload)?,
        }
        entry.end()
    }
}

/// `playerActivity` of `AudioPlayer.PlaybackState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlayerActivity {
    /// Nothing loaded.
    #[default]
    Idle,
    /// Playing.
    Playing,
    /// Stopped by the user or a directive.
    Stopped,
    /// Paused.
    Paused,
    /// Starved of data.
    BufferUnderrun,
    /// Played to the end.
    Finished,
}

/// `AudioPlayer.PlaybackState` payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackState {
    /// Token of the current stream, empty when idle.
    pub token: String,
    /// Position in the current stream.
    pub offset_in_milliseconds: u64,
    /// What the player is doing.
    pub player_activity: PlayerActivity,
}

/// `Speaker.VolumeState` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    /// 0 to 100.
    pub volume: u8,
    /// Whether output is muted.
    pub muted: bool,
}

/// `playerActivity` of `SpeechSynthesizer.SpeechState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpeechActivity {
    /// Speaking now.
    Playing,
    /// Not speaking (the state at rest).
    #[default]
    Finished,
    /// Cut short by barge-in.
    Interrupted,
}

/// `SpeechSynthesizer.SpeechState` payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeechState {
    /// Token of the last Speak, empty if none.
    pub token: String,
    /// Position in the current speech.
    pub offset_in_milliseconds: u64,
    /// What the synthesizer is doing.
    pub player_activity: SpeechActivity,
}

/// Kind of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertType {
    /// A countdown.
    Timer,
    /// A wall-clock alarm.
    Alarm,
    /// A reminder.
    Reminder,
}

/// One alert in `Alerts.AlertsState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The alert's token from SetAlert.
    pub token: String,
    /// Timer, alarm or reminder.
    #[serde(rename = "type")]
    pub kind: AlertType,
    /// ISO 8601 time it is due.
    pub scheduled_time: String,
}

/// `Alerts.AlertsState` payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsState {
    /// Every alert the device holds.
    pub all_alerts: Vec<Alert>,
    /// Those sounding now.
    pub active_alerts: Vec<Alert>,
}
