//! What AVS enforces on a request, and how it says no: a Bearer token that
//! `avs-sim lwa` signed and that has not expired, a `multipart/form-data`
//! content type with a boundary, and `metadata` JSON of the shape in
//! protocol brief §D.1. Refusals carry a `System.Exception` JSON body
//! (§C.7) whose `description` says exactly what was wrong.

use bytes::Bytes;
use http::{HeaderMap, Response};
use serde_json::{Value, json};

/// A refusal: the HTTP status, the exception code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The System.Exception code (empty: no body, as for 503).
    pub code: &'static str,
    /// What was wrong, for the client and the log.
    pub description: String,
}

impl Refusal {
    /// 400 INVALID_REQUEST_EXCEPTION.
    pub(super) fn invalid(description: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "INVALID_REQUEST_EXCEPTION",
            description: description.into(),
        }
    }

    /// The refusal AVS gives for `status` when a fault knob asks for it.
    pub(super) fn for_status(status: u16) -> Self {
        let (code, description) = match status {
            400 => (
                "INVALID_REQUEST_EXCEPTION",
                "avs-sim was told to refuse this request",
            ),
            403 => (
                "UNAUTHORIZED_REQUEST_EXCEPTION",
                "avs-sim was told to refuse the access token",
            ),
            415 => (
                "UNSUPPORTED_MEDIA_TYPE",
                "avs-sim was told to refuse the content type",
            ),
            429 => (
                "THROTTLING_EXCEPTION",
                "avs-sim was told to throttle this request",
            ),
            503 => ("", "avs-sim was told to be unavailable"),
            _ => (
                "INTERNAL_SERVICE_EXCEPTION",
                "avs-sim was told to fail this request",
            ),
        };
        Self {
            status,
            code,
            description: description.to_string(),
        }
    }

    /// The response head and the System.Exception body. 503 has no
    /// exception code in AVS (§C.7) and goes out without a body.
    pub(super) fn response(&self) -> (Response<()>, Option<Bytes>) {
        let mut resp = Response::builder().status(self.status);
        if self.code.is_empty() {
            return (resp.body(()).unwrap_or_default(), None);
        }
        resp = resp.header("content-type", "application/json");
        let body = json!({
            "header": {
                "namespace": "System",
                "name": "Exception",
                "messageId": uuid::Uuid::new_v4().to_string(),
            },
            "payload": {"code": self.code, "description": self.description},
        });
        (
            resp.body(()).unwrap_or_default(),
            Some(Bytes::from(body.to_string())),
        )
    }
}

/// AVS's answer to a token it does not take: 403
/// `UNAUTHORIZED_REQUEST_EXCEPTION` saying why.
pub(super) fn forbidden(description: String) -> Refusal {
    Refusal {
        status: 403,
        code: "UNAUTHORIZED_REQUEST_EXCEPTION",
        description,
    }
}

/// Check the `authorization` header: `Bearer <token>` whose signature is
/// good and which is not expired; its claims for the checks that need the
/// stand-in's state (revocations, refusals). The token itself never
/// reaches a log.
pub(super) fn check_auth(headers: &HeaderMap, key: &[u8]) -> Result<crate::token::Claims, Refusal> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| forbidden("no authorization header".into()))?
        .to_str()
        .map_err(|_| forbidden("the authorization header is not ASCII".into()))?;
    let token = value.strip_prefix("Bearer ").ok_or_else(|| {
        forbidden("the authorization header is not `Bearer <access token>`".into())
    })?;
    crate::token::verify_access_token(key, token.trim(), kit::clock::unix_now())
        .map_err(|e| forbidden(format!("the access token was refused: {e}")))
}

/// The boundary of an event's `multipart/form-data` content type; 415 for
/// another media type, 400 for a missing or unusable boundary.
pub(super) fn form_boundary(headers: &HeaderMap) -> Result<String, Refusal> {
    let unsupported = |what: String| Refusal {
        status: 415,
        code: "UNSUPPORTED_MEDIA_TYPE",
        description: format!("events must be multipart/form-data; got {what}"),
    };
    let value = match headers.get(http::header::CONTENT_TYPE) {
        None => return Err(unsupported("no content-type".into())),
        Some(v) => v
            .to_str()
            .map_err(|_| unsupported("a content-type that is not ASCII".into()))?,
    };
    let media = value.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(unsupported(format!("`{media}`")));
    }
    avs_proto::multipart::boundary_from_content_type(value)
        .map_err(|e| Refusal::invalid(format!("content-type `{value}`: {e}")))
}

/// An event's metadata, checked.
#[derive(Debug, Clone)]
pub(super) struct Metadata {
    /// `Namespace.Name`.
    pub name: String,
    /// The header's dialogRequestId.
    pub dialog_request_id: Option<String>,
    /// `event.payload`.
    pub payload: Value,
    /// The `context` entries (shape of each header checked), if any.
    pub context: Option<Vec<Value>>,
    /// The whole metadata object, for checks that read more of it
    /// (Alexa.Discovery).
    pub value: Value,
}

impl Metadata {
    /// Whether this is `SpeechRecognizer.Recognize`.
    pub(super) fn is_recognize(&self) -> bool {
        self.name == "SpeechRecognizer.Recognize"
    }

    /// Whether this is `Alexa.Discovery.AddOrUpdateReport`.
    pub(super) fn is_discovery(&self) -> bool {
        self.name == "Alexa.Discovery.AddOrUpdateReport"
    }

    /// A UserInactivityReport's `inactiveTimeInSeconds`: AVS takes a
    /// whole number of seconds, not negative.
    pub(super) fn inactive_seconds(&self) -> Result<u64, Refusal> {
        self.payload
            .get("inactiveTimeInSeconds")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                Refusal::invalid(
                    "event.payload.inactiveTimeInSeconds is missing or not a whole number >= 0",
                )
            })
    }
}

/// The only audio format this stand-in decodes (§D.7).
pub(super) const L16: &str = "AUDIO_L16_RATE_16000_CHANNELS_1";

fn non_empty_str<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, Refusal> {
    match v.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(Refusal::invalid(format!("{at}.{key} is empty"))),
        None => Err(Refusal::invalid(format!(
            "{at}.{key} is missing or not a string"
        ))),
    }
}

/// Parse and check the `metadata` part: `{"context"?: [...], "event":
/// {"header": {namespace, name, messageId, ...}, "payload": {...}}}`.
pub(super) fn check_metadata(json: &[u8]) -> Result<Metadata, Refusal> {
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| Refusal::invalid(format!("the metadata part is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Refusal::invalid("the metadata part is not a JSON object"));
    }
    let event = value
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| Refusal::invalid("the metadata has no `event` object"))?;
    let header = event
        .get("header")
        .filter(|h| h.is_object())
        .ok_or_else(|| Refusal::invalid("event.header is missing or not an object"))?;
    let namespace = non_empty_str(header, "namespace", "event.header")?;
    let name = non_empty_str(header, "name", "event.header")?;
    non_empty_str(header, "messageId", "event.header")?;
    let dialog_request_id = match header.get("dialogRequestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(Refusal::invalid(
                "event.header.dialogRequestId is not a non-empty string",
            ));
        }
    };
    let payload = event
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| Refusal::invalid("event.payload is missing or not an object"))?;
    let context = match value.get("context") {
        None => None,
        Some(Value::Array(entries)) => Some(entries),
        Some(_) => return Err(Refusal::invalid("`context` is not an array")),
    };
    for (i, entry) in context.into_iter().flatten().enumerate() {
        let at = format!("context[{i}]");
        let h = entry
            .get("header")
            .filter(|h| h.is_object())
            .ok_or_else(|| Refusal::invalid(format!("{at}.header is missing or not an object")))?;
        non_empty_str(h, "namespace", &format!("{at}.header"))?;
        non_empty_str(h, "name", &format!("{at}.header"))?;
        if !entry.get("payload").is_some_and(Value::is_object) {
            return Err(Refusal::invalid(format!(
                "{at}.payload is missing or not an object"
            )));
        }
    }
    let meta = Metadata {
        name: format!("{namespace}.{name}"),
        dialog_request_id,
        payload: payload.clone(),
        context: context.cloned(),
        value: value.clone(),
    };
    let needs_context = matches!(
        meta.name.as_str(),
        "SpeechRecognizer.Recognize" | "System.SynchronizeState" | "System.ExceptionEncountered"
    );
    if needs_context && context.is_none() {
        return Err(Refusal::invalid(format!(
            "{} must carry the device's `context`",
            meta.name
        )));
    }
    if meta.is_recognize() {
        check_recognize(&meta)?;
    }
    if meta.name == "System.UserInactivityReport" {
        meta.inactive_seconds()?;
    }
    Ok(meta)
}

fn check_recognize(meta: &Metadata) -> Result<(), Refusal> {
    if meta.dialog_request_id.is_none() {
        return Err(Refusal::invalid(
            "a Recognize must carry event.header.dialogRequestId",
        ));
    }
    let p = &meta.payload;
    let profile = non_empty_str(p, "profile", "event.payload")?;
    if !matches!(profile, "CLOSE_TALK" | "NEAR_FIELD" | "FAR_FIELD") {
        return Err(Refusal::invalid(format!(
            "event.payload.profile `{profile}` is not CLOSE_TALK, NEAR_FIELD or FAR_FIELD"
        )));
    }
    let format = non_empty_str(p, "format", "event.payload")?;
    if format != L16 {
        return Err(Refusal::invalid(format!(
            "event.payload.format `{format}` is not {L16} (the only format avs-sim decodes)"
        )));
    }
    // Null reads as absent, as for the optional header fields.
    if let Some(init) = p.get("initiator")
        && !init.is_object()
        && !init.is_null()
    {
        return Err(Refusal::invalid("event.payload.initiator is not an object"));
    }
    super::wakeword::check_initiator(p.get("initiator"), profile)?;
    Ok(())
}

/// The order AVS wants after connecting (§C.3): the downchannel first,
/// then optionally `Alexa.Discovery.AddOrUpdateReport`, then
/// `System.SynchronizeState`, then anything.
pub(super) fn check_order(synced: bool, name: &str) -> Result<(), Refusal> {
    if synced || name == "System.SynchronizeState" || name == "Alexa.Discovery.AddOrUpdateReport" {
        return Ok(());
    }
    Err(Refusal::invalid(format!(
        "{name} came before System.SynchronizeState: after opening the downchannel, send \
         Alexa.Discovery.AddOrUpdateReport (optional) and then System.SynchronizeState first"
    )))
}

/// 400 for an event on a connection without a downchannel.
pub(super) fn no_downchannel() -> Refusal {
    Refusal::invalid(
        "no downchannel was opened on this connection: open GET /v20160207/directives \
         before sending events",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(header: Value, payload: Value, context: Option<Value>) -> Vec<u8> {
        let mut v = json!({"event": {"header": header, "payload": payload}});
        if let Some(c) = context {
            v["context"] = c;
        }
        v.to_string().into_bytes()
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let err = |b: &[u8]| check_metadata(b).unwrap_err().description;
        assert!(err(b"{nope").contains("not valid JSON"));
        assert!(err(b"[]").contains("not a JSON object"));
        assert!(err(b"{}").contains("no `event` object"));
        let h = json!({"namespace": "System", "name": "SynchronizeState"});
        assert!(err(&event(h, json!({}), Some(json!([])))).contains("event.header.messageId"));
        let h = json!({"namespace": "System", "name": "SynchronizeState", "messageId": "m"});
        assert!(err(&event(h.clone(), json!({}), None)).contains("must carry"));
        assert!(err(&event(h.clone(), json!(1), Some(json!([])))).contains("event.payload"));
        let bad_ctx = json!([{"header": {"namespace": "A"}, "payload": {}}]);
        assert!(
            err(&event(h.clone(), json!({}), Some(bad_ctx))).contains("context[0].header.name")
        );
        let ok = check_metadata(&event(h, json!({}), Some(json!([])))).unwrap();
        assert_eq!(ok.name, "System.SynchronizeState");
    }

    #[test]
    fn recognize_needs_dialog_id_profile_and_l16() {
        let err = |h: Value, p: Value| {
            check_metadata(&event(h, p, Some(json!([]))))
                .unwrap_err()
                .description
        };
        let h = json!({"namespace": "SpeechRecognizer", "name": "Recognize", "messageId": "m"});
        let p = json!({"profile": "NEAR_FIELD", "format": L16});
        assert!(err(h.clone(), p.clone()).contains("dialogRequestId"));
        let mut hd = h.clone();
        hd["dialogRequestId"] = json!("d");
        assert!(err(hd.clone(), json!({"profile": "LOUD", "format": L16})).contains("LOUD"));
        assert!(
            err(
                hd.clone(),
                json!({"profile": "NEAR_FIELD", "format": "OPUS"})
            )
            .contains("OPUS")
        );
        assert!(check_metadata(&event(hd, p, Some(json!([])))).is_ok());
    }

    #[test]
    fn inactivity_report_needs_whole_seconds() {
        let h = json!({"namespace": "System", "name": "UserInactivityReport", "messageId": "m"});
        let check = |p: Value| check_metadata(&event(h.clone(), p, None));
        for bad in [
            json!({}),
            json!({"inactiveTimeInSeconds": -1}),
            json!({"inactiveTimeInSeconds": 1.5}),
            json!({"inactiveTimeInSeconds": "60"}),
        ] {
            let e = check(bad.clone()).unwrap_err().description;
            assert!(e.contains("inactiveTimeInSeconds"), "{bad}: {e}");
        }
        let ok = check(json!({"inactiveTimeInSeconds": 3600})).unwrap();
        assert_eq!(ok.inactive_seconds().unwrap(), 3600);
    }

    #[test]
    fn order_and_auth() {
        assert!(check_order(false, "System.SynchronizeState").is_ok());
        assert!(check_order(false, "Alexa.Discovery.AddOrUpdateReport").is_ok());
        assert!(check_order(false, "SpeechSynthesizer.SpeechStarted").is_err());
        assert!(check_order(true, "SpeechSynthesizer.SpeechStarted").is_ok());
        let key = b"0123456789abcdef0123456789abcdef";
        let mut h = HeaderMap::new();
        assert!(
            check_auth(&h, key)
                .unwrap_err()
                .description
                .contains("no authorization")
        );
        let t = crate::token::issue_access_token(key, "c", std::time::Duration::from_secs(60));
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        assert!(check_auth(&h, key).is_ok());
        let other = b"another key, another key, another";
        let e = check_auth(&h, other).unwrap_err();
        assert_eq!((e.status, e.code), (403, "UNAUTHORIZED_REQUEST_EXCEPTION"));
        assert!(!e.description.contains(&t));
    }
}
