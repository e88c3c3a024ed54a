//! The JSON envelopes of AVS v20160207: directives and exceptions coming
//! in, events and context going out (protocol brief §C.6, §C.7, §D).
//!
//! Directives are parsed in two steps: the envelope first, which every
//! directive must satisfy, then the payload by namespace and name only when
//! a handler asks. That way an unknown or malformed payload can still be
//! reported to AVS with its header, and new AVS fields never break parsing.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

mod event;

pub use event::{
    Alert, AlertType, AlertsState, ContextEntry, Event, ExceptionErrorType, PlaybackState,
    PlayerActivity, SpeechActivity, SpeechState, VolumeState, new_dialog_request_id,
};

/// The SDK's cap on a non-multipart (exception) response body.
pub const MAX_EXCEPTION_BODY: usize = 4096;

/// The header of a directive or event (`camelCase` on the wire). Fields
/// newer AVS versions add (`instance`, `payloadVersion`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// The interface, e.g. `SpeechSynthesizer`.
    pub namespace: String,
    /// The message within the interface, e.g. `Speak`.
    pub name: String,
    /// Unique per message.
    pub message_id: String,
    /// Ties directives to the Recognize event that caused them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog_request_id: Option<String>,
}

/// A directive whose envelope is valid; the payload is still raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directive {
    /// Routing information.
    pub header: Header,
    /// Interpreted by [`Directive::known`] or by the handler.
    #[serde(default)]
    pub payload: Value,
}

/// A message that is not even a valid envelope.
#[derive(Debug, Error)]
pub enum MessageError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// Which envelope was expected.
        what: &'static str,
        /// serde's account of what was wrong and where.
        #[source]
        source: serde_json::Error,
    },
    /// A plain-JSON error body above [`MAX_EXCEPTION_BODY`].
    #[error("exception body of {0} bytes exceeds {MAX_EXCEPTION_BODY}")]
    TooLarge(usize),
    /// A plain-JSON body that is not `System.Exception`.
    #[error("expected System.Exception, got {namespace}.{name}")]
    NotAnException {
        /// The namespace found.
        namespace: String,
        /// The name found.
        name: String,
    },
}

#[derive(Deserialize)]
struct DirectiveEnvelope {
    directive: Directive,
}

/// Parses one JSON part of a directive stream, `{"directive":{...}}`.
pub fn parse_directive(json: &[u8]) -> Result<Directive, MessageError> {
    serde_json::from_slice::<DirectiveEnvelope>(json)
        .map(|envelope| envelope.directive)
        .map_err(|source| MessageError::Json {
            what: "directive",
            source,
        })
}

/// Why a directive's payload could not be turned into a [`KnownDirective`].
#[derive(Debug, Error)]
pub enum DirectiveError {
    /// avsd has no handler for this namespace and name.
    #[error("unsupported directive {namespace}.{name}")]
    Unsupported {
        /// The directive's namespace.
        namespace: String,
        /// The directive's name.
        name: String,
    },
    /// The payload does not have the fields the directive needs.
    #[error("{namespace}.{name}: bad payload: {source}")]
    BadPayload {
        /// The directive's namespace.
        namespace: String,
        /// The directive's name.
        name: String,
        /// serde's account of the missing or mistyped field.
        #[source]
        source: serde_json::Error,
    },
    /// The payload parses but breaks a rule of the protocol.
    #[error("{namespace}.{name}: {reason}")]
    Invalid {
        /// The directive's namespace.
        namespace: String,
        /// The directive's name.
        name: String,
        /// Which rule.
        reason: String,
    },
}

impl DirectiveError {
    /// The `error.type` to put in the `System.ExceptionEncountered` report.
    pub fn exception_type(&self) -> ExceptionErrorType {
        match self {
            Self::Unsupported { .. } => ExceptionErrorType::UnsupportedOperation,
            // The SDK answers an ExpectSpeech without a timeout this way (§D.3).
            Self::BadPayload {
                namespace, name, ..
            } if namespace == "SpeechRecognizer" && name == "ExpectSpeech" => {
                ExceptionErrorType::UnsupportedOperation
            }
            Self::BadPayload { .. } | Self::Invalid { .. } => {
                ExceptionErrorType::UnexpectedInformationReceived
            }
        }
    }
}

/// `SpeechRecognizer.ExpectSpeech`: open the microphone again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectSpeech {
    /// How long to wait for speech before `ExpectSpeechTimedOut`.
    pub timeout_in_milliseconds: u64,
    /// Echoed unchanged in the next Recognize event, if present.
    #[serde(default)]
    pub initiator: Option<Value>,
}

/// `SpeechSynthesizer.Speak`: play the MP3 attachment named by `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Speak {
    /// `cid:<Content-ID>` of the audio part.
    pub url: String,
    /// `AUDIO_MPEG`.
    pub format: String,
    /// Echoed in SpeechStarted/SpeechFinished and the SpeechState context.
    pub token: String,
}

impl Speak {
    /// The payload of `directive` (a `SpeechSynthesizer.Speak`), checked:
    /// the audio must be an attachment of the same response (`cid:`).
    pub fn from_directive(directive: &Directive) -> Result<Self, DirectiveError> {
        let speak: Speak = directive.payload()?;
        if !speak.url.starts_with("cid:") {
            return Err(directive.invalid(format!("url {:?} is not a cid: URL", speak.url)));
        }
        Ok(speak)
    }

    /// The Content-ID the `url` points at, percent-decoded (RFC 2392 URLs
    /// are percent-encoded; the part's Content-ID header is not).
    pub fn content_id(&self) -> String {
        let raw = self.url.strip_prefix("cid:").unwrap_or(&self.url);
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned()
    }
}

/// `System.SetEndpoint`: reconnect to another AVS base URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SetEndpoint {
    /// The new base URL, `https://...`.
    pub endpoint: String,
}

impl SetEndpoint {
    /// The payload of `directive` (a `System.SetEndpoint`), checked: avsd
    /// only ever talks to AVS over https.
    pub fn from_directive(directive: &Directive) -> Result<Self, DirectiveError> {
        let set: SetEndpoint = directive.payload()?;
        let https = url::Url::parse(&set.endpoint).is_ok_and(|u| u.scheme() == "https");
        if !https {
            return Err(
                directive.invalid(format!("endpoint {:?} is not an https URL", set.endpoint))
            );
        }
        Ok(set)
    }
}

/// `System.Exception`, as a directive or as a plain-JSON error body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExceptionPayload {
    /// E.g. `UNAUTHORIZED_REQUEST_EXCEPTION`.
    pub code: String,
    /// Free text; may be missing or null.
    #[serde(default)]
    pub description: Option<String>,
}

/// The directives avsd acts on, with their payloads checked.
#[derive(Debug, Clone, PartialEq)]
pub enum KnownDirective {
    /// `SpeechRecognizer.StopCapture`.
    StopCapture,
    /// `SpeechRecognizer.ExpectSpeech`.
    ExpectSpeech(ExpectSpeech),
    /// `SpeechSynthesizer.Speak`.
    Speak(Speak),
    /// `System.ResetUserInactivity`.
    ResetUserInactivity,
    /// `System.SetEndpoint`.
    SetEndpoint(SetEndpoint),
    /// `System.RevokeAuthorization`.
    RevokeAuthorization,
    /// `System.Exception`.
    Exception(ExceptionPayload),
}

impl Directive {
    /// `Namespace.Name`, for logs.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.header.namespace, self.header.name)
    }

    /// Interprets the payload by namespace and name, for the whole set of
    /// directives avsd knows at once (fuzzing and protocol tools). The
    /// daemon does not use it: each capability agent (`crate::agents`)
    /// parses the directives of its own namespace, once.
    pub fn known(&self) -> Result<KnownDirective, DirectiveError> {
        let h = &self.header;
        let known = match (h.namespace.as_str(), h.name.as_str()) {
            ("SpeechRecognizer", "StopCapture") => KnownDirective::StopCapture,
            ("SpeechRecognizer", "ExpectSpeech") => KnownDirective::ExpectSpeech(self.payload()?),
            ("SpeechSynthesizer", "Speak") => KnownDirective::Speak(Speak::from_directive(self)?),
            ("System", "ResetUserInactivity") => KnownDirective::ResetUserInactivity,
            ("System", "SetEndpoint") => {
                KnownDirective::SetEndpoint(SetEndpoint::from_directive(self)?)
            }
            ("System", "RevokeAuthorization") => KnownDirective::RevokeAuthorization,
            ("System", "Exception") => KnownDirective::Exception(self.payload()?),
            _ => return Err(self.unsupported()),
        };
        Ok(known)
    }

    /// The payload as `T`, or why it is not one (for the report to AVS).
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, DirectiveError> {
        T::deserialize(&self.payload).map_err(|source| DirectiveError::BadPayload {
            namespace: self.header.namespace.clone(),
            name: self.header.name.clone(),
            source,
        })
    }

    /// The error for a directive avsd has no handler for.
    pub fn unsupported(&self) -> DirectiveError {
        DirectiveError::Unsupported {
            namespace: self.header.namespace.clone(),
            name: self.header.name.clone(),
        }
    }

    /// The error for a payload that parses but breaks a rule of the
    /// protocol, `reason` saying which.
    pub fn invalid(&self, reason: String) -> DirectiveError {
        DirectiveError::Invalid {
            namespace: self.header.namespace.clone(),
            name: self.header.name.clone(),
            reason,
        }
    }
}

/// A `System.Exception` received as a plain-JSON response body (C.6/C.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvsException {
    /// The exception's messageId, if the body had one (for logs).
    pub message_id: Option<String>,
    /// Code and description.
    pub payload: ExceptionPayload,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ExceptionBody {
    Wrapped { directive: ExceptionMessage },
    Bare(ExceptionMessage),
}

#[derive(Deserialize)]
struct ExceptionMessage {
    #[serde(default)]
    header: Option<ExceptionHeader>,
    payload: ExceptionPayload,
}

/// Lenient on purpose: an error report missing its messageId is still
/// worth reading, unlike a directive.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExceptionHeader {
    namespace: String,
    name: String,
    #[serde(default)]
    message_id: Option<String>,
}

/// Parses the body of a non-multipart error response (400, 403, 429, 500).
/// Accepts the documented bare `{"header":..,"payload":..}` and the same
/// object wrapped in `"directive"`.
pub fn parse_exception_body(body: &[u8]) -> Result<AvsException, MessageError> {
    if body.len() > MAX_EXCEPTION_BODY {
        return Err(MessageError::TooLarge(body.len()));
    }
    let message = match serde_json::from_slice::<ExceptionBody>(body) {
        Ok(ExceptionBody::Wrapped { directive }) => directive,
        Ok(ExceptionBody::Bare(bare)) => bare,
        // Re-parse as the documented shape so the error names its field.
        Err(_) => serde_json::from_slice::<ExceptionMessage>(body).map_err(|source| {
            MessageError::Json {
                what: "System.Exception",
                source,
            }
        })?,
    };
    if let Some(h) = &message.header
        && (h.namespace != "System" || h.name != "Exception")
    {
        return Err(MessageError::NotAnException {
            namespace: h.namespace.clone(),
            name: h.name.clone(),
        });
    }
    Ok(AvsException {
        message_id: message.header.and_then(|h| h.message_id),
        payload: message.payload,
    })
}
