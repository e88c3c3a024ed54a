//! What `GET /stats` reports: connection counters, the events in the
//! order they came, refusals, and what each Recognize carried.

use serde::Serialize;
use serde_json::Value;

/// Connection counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionStats {
    /// Open now.
    pub current: u64,
    /// The most open at once.
    pub peak: u64,
    /// Accepted since start (or the last reset).
    pub total: u64,
    /// Open and not sent a GOAWAY: the ones a client may start streams on.
    pub active: u64,
    /// The most active at once; a client that keeps one connection (with
    /// a make-before-break handover after GOAWAY) never makes this 2.
    pub peak_active: u64,
    /// Refused by the `/refuse` knob.
    pub refused: u64,
    /// Sent a GOAWAY by the stand-in.
    pub goaways: u64,
    /// Cut by the `/cut` knob.
    pub cuts: u64,
}

/// One event whose metadata could be read.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// The connection it came on.
    pub connection: u64,
    /// `Namespace.Name`.
    pub name: String,
    /// The status it was answered with.
    pub status: u16,
    /// Its dialogRequestId, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialog_request_id: Option<String>,
    /// A UserInactivityReport's `inactiveTimeInSeconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactive_seconds: Option<u64>,
    /// `event.payload`, for tests that check what the device said.
    pub payload: serde_json::Value,
}

/// An accepted `Alexa.Discovery.AddOrUpdateReport`: what the device
/// declared.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryRecord {
    /// The connection it came on.
    pub connection: u64,
    /// The device's endpoint and capabilities.
    #[serde(flatten)]
    pub declaration: super::capabilities::Declaration,
}

/// A request the stand-in refused.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// The connection it came on.
    pub connection: u64,
    /// The request path.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// The System.Exception code sent.
    pub code: String,
    /// Why.
    pub description: String,
}

/// What one Recognize carried and how it was answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecognizeRecord {
    /// The connection it came on.
    pub connection: u64,
    /// Its dialogRequestId.
    pub dialog_request_id: String,
    /// CLOSE_TALK, NEAR_FIELD or FAR_FIELD.
    pub profile: String,
    /// The `initiator` object as sent (null without one).
    pub initiator: Value,
    /// Bytes of audio received.
    pub audio_bytes: u64,
    /// Milliseconds from the request's headers to the first audio byte.
    pub first_audio_ms: Option<f64>,
    /// Milliseconds from the first to the last audio byte.
    pub stream_ms: f64,
    /// The audio's length at 16 kHz 16-bit mono.
    pub audio_ms: f64,
    /// RMS of the loudest 100 ms window.
    pub peak_rms: f64,
    /// Milliseconds from the first audio byte to StopCapture, if sent.
    pub stop_capture_ms: Option<f64>,
    /// Milliseconds from the first audio byte to the end of the upload, if
    /// the client ended it (after StopCapture: how fast it reacted).
    pub upload_end_ms: Option<f64>,
    /// `speak`, `silence`, `no speak: …` (SpeechSynthesizer undeclared),
    /// `bad audio: …` or `failed: …`.
    pub outcome: String,
    /// Whether an ExpectSpeech followed the Speak.
    pub expect_speech: bool,
}

/// Everything `GET /stats` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Connection counters.
    pub connections: ConnectionStats,
    /// Downchannels opened.
    pub downchannels: u64,
    /// `GET /ping` requests answered 204.
    pub pings: u64,
    /// Events in the order they arrived.
    pub events: Vec<EventRecord>,
    /// Requests refused with an error status.
    pub rejections: Vec<Rejection>,
    /// Accepted Discovery reports, in order.
    pub discoveries: Vec<DiscoveryRecord>,
    /// Recognize events, in order.
    pub recognizes: Vec<RecognizeRecord>,
    /// Directives pushed on a downchannel.
    pub pushes: u64,
    /// The most requests in progress at once on one connection, the
    /// downchannel included (AVS allows 10 streams: downchannel, ping and
    /// at most 8 events).
    pub peak_requests: u64,
}
