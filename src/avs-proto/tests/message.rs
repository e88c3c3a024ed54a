use serde_json::{Value, json};

use crate::message::{
    Alert, AlertType, AlertsState, ContextEntry, DirectiveError, Event, ExceptionErrorType,
    KnownDirective, MessageError, PlaybackState, PlayerActivity, SpeechActivity, SpeechState,
    VolumeState, parse_directive, parse_exception_body,
};

/// The event's JSON with its generated messageId replaced, for comparing
/// against the protocol brief's examples.
fn shape(event: &Event) -> Value {
    let mut value: Value = serde_json::from_str(&event.to_json()).expect("valid JSON");
    let id = &mut value["event"]["header"]["messageId"];
    assert_eq!(id.as_str().map(str::len), Some(36), "a UUID messageId");
    *id = json!("<uuid>");
    value
}

#[test]
fn synchronize_state_matches_protocol_g2() {
    let event = Event::synchronize_state(ContextEntry::idle(50));
    let text = event.to_json();
    assert!(
        text.starts_with("{\"context\":["),
        "context first, as AVS samples send it"
    );
    let want = json!({"context":[
      {"header":{"namespace":"AudioPlayer","name":"PlaybackState"},"payload":{"token":"","offsetInMilliseconds":0,"playerActivity":"IDLE"}},
      {"header":{"namespace":"Speaker","name":"VolumeState"},"payload":{"volume":50,"muted":false}},
      {"header":{"namespace":"SpeechSynthesizer","name":"SpeechState"},"payload":{"token":"","offsetInMilliseconds":0,"playerActivity":"FINISHED"}},
      {"header":{"namespace":"Alerts","name":"AlertsState"},"payload":{"allAlerts":[],"activeAlerts":[]}}],
     "event":{"header":{"namespace":"System","name":"SynchronizeState","messageId":"<uuid>"},"payload":{}}});
    assert_eq!(shape(&event), want);
}

#[test]
fn recognize_matches_protocol_g3() {
    let initiator = json!({"type":"TAP"});
    let event = Event::recognize(
        "dlg-1",
        "NEAR_FIELD",
        "AUDIO_L16_RATE_16000_CHANNELS_1",
        Some(initiator),
        vec![],
    );
    let want = json!({"context":[],
     "event":{"header":{"namespace":"SpeechRecognizer","name":"Recognize","messageId":"<uuid>","dialogRequestId":"dlg-1"},
              "payload":{"profile":"NEAR_FIELD","format":"AUDIO_L16_RATE_16000_CHANNELS_1","initiator":{"type":"TAP"}}}});
    assert_eq!(shape(&event), want);
}

#[test]
fn simple_events_have_no_context_and_fresh_ids() {
    let a = Event::speech("SpeechStarted", "tok-1");
    let b = Event::speech("SpeechStarted", "tok-1");
    assert_ne!(a.header().message_id, b.header().message_id);
    assert_eq!(
        shape(&a),
        json!({"event":{"header":{"namespace":"SpeechSynthesizer","name":"SpeechStarted","messageId":"<uuid>"},"payload":{"token":"tok-1"}}})
    );
    assert_eq!(
        shape(&Event::user_inactivity_report(3600))["event"]["payload"],
        json!({"inactiveTimeInSeconds":3600})
    );
    assert_eq!(
        shape(&Event::expect_speech_timed_out())["event"]["header"]["name"],
        json!("ExpectSpeechTimedOut")
    );
}

#[test]
fn exception_encountered_matches_protocol_d5() {
    let raw =
        r#"{"directive":{"header":{"namespace":"X","name":"Y","messageId":"m"},"payload":{}}}"#;
    let event = Event::exception_encountered(
        raw,
        ExceptionErrorType::UnsupportedOperation,
        "unsupported directive X.Y",
        vec![],
    );
    assert_eq!(
        shape(&event)["event"],
        json!({"header":{"namespace":"System","name":"ExceptionEncountered","messageId":"<uuid>"},
               "payload":{"unparsedDirective":raw,"error":{"type":"UNSUPPORTED_OPERATION","message":"unsupported directive X.Y"}}})
    );
}

#[test]
fn context_entries_serialize_as_protocol_d2() {
    let alert = Alert {
        token: "a1".into(),
        kind: AlertType::Timer,
        scheduled_time: "2026-01-01T00:00:00+0000".into(),
    };
    let entries = vec![
        ContextEntry::PlaybackState(PlaybackState {
            token: "t".into(),
            offset_in_milliseconds: 1200,
            player_activity: PlayerActivity::BufferUnderrun,
        }),
        ContextEntry::VolumeState(VolumeState {
            volume: 100,
            muted: true,
        }),
        ContextEntry::SpeechState(SpeechState {
            token: "s".into(),
            offset_in_milliseconds: 5,
            player_activity: SpeechActivity::Interrupted,
        }),
        ContextEntry::AlertsState(AlertsState {
            all_alerts: vec![alert.clone()],
            active_alerts: vec![alert],
        }),
        ContextEntry::Other {
            namespace: "Notifications".into(),
            name: "IndicatorState".into(),
            payload: json!({"isEnabled":false,"isVisualIndicatorPersisted":false}),
        },
    ];
    let value = serde_json::to_value(&entries).expect("serializes");
    assert_eq!(
        value[0]["payload"]["playerActivity"],
        json!("BUFFER_UNDERRUN")
    );
    assert_eq!(value[0]["payload"]["offsetInMilliseconds"], json!(1200));
    assert_eq!(
        value[1],
        json!({"header":{"namespace":"Speaker","name":"VolumeState"},"payload":{"volume":100,"muted":true}})
    );
    assert_eq!(value[2]["payload"]["playerActivity"], json!("INTERRUPTED"));
    assert_eq!(
        value[3]["payload"]["activeAlerts"][0],
        json!({"token":"a1","type":"TIMER","scheduledTime":"2026-01-01T00:00:00+0000"})
    );
    assert_eq!(
        value[4]["header"],
        json!({"namespace":"Notifications","name":"IndicatorState"})
    );
}

#[test]
fn directive_envelope_ignores_unknown_fields() {
    let json = br#"{"directive":{"header":{"namespace":"SpeechSynthesizer","name":"Speak","messageId":"m1",
        "dialogRequestId":"d1","payloadVersion":"2","instance":"i"},"endpoint":{"endpointId":"e"},
        "payload":{"url":"cid:TTS%40123","format":"AUDIO_MPEG","token":"tok-1","caption":{"type":"WEBVTT"}}}}"#;
    let directive = parse_directive(json).expect("valid directive");
    assert_eq!(directive.header.dialog_request_id.as_deref(), Some("d1"));
    assert_eq!(directive.qualified_name(), "SpeechSynthesizer.Speak");
    let Ok(KnownDirective::Speak(speak)) = directive.known() else {
        panic!("not a Speak: {:?}", directive.known());
    };
    assert_eq!(speak.token, "tok-1");
    assert_eq!(speak.content_id(), "TTS@123");
}

fn directive(namespace: &str, name: &str, payload: Value) -> crate::message::Directive {
    let text = json!({"directive":{"header":{"namespace":namespace,"name":name,"messageId":"m"},"payload":payload}});
    parse_directive(text.to_string().as_bytes()).expect("valid envelope")
}

#[test]
fn known_directives_parse_their_payloads() {
    let cases = [
        (
            "SpeechRecognizer",
            "StopCapture",
            json!({}),
            KnownDirective::StopCapture,
        ),
        (
            "System",
            "ResetUserInactivity",
            json!({}),
            KnownDirective::ResetUserInactivity,
        ),
        (
            "System",
            "RevokeAuthorization",
            json!({}),
            KnownDirective::RevokeAuthorization,
        ),
    ];
    for (ns, name, payload, want) in cases {
        assert_eq!(directive(ns, name, payload).known().ok(), Some(want));
    }
    let expect = directive(
        "SpeechRecognizer",
        "ExpectSpeech",
        json!({"timeoutInMilliseconds":8000,"initiator":{"type":"X","payload":{"token":"t"}}}),
    );
    let Ok(KnownDirective::ExpectSpeech(e)) = expect.known() else {
        panic!()
    };
    assert_eq!(e.timeout_in_milliseconds, 8000);
    assert_eq!(
        e.initiator,
        Some(json!({"type":"X","payload":{"token":"t"}}))
    );
    let set = directive(
        "System",
        "SetEndpoint",
        json!({"endpoint":"https://alexa.eu.gateway.devices.a2z.com"}),
    );
    assert!(
        matches!(set.known(), Ok(KnownDirective::SetEndpoint(s)) if s.endpoint.contains(".eu."))
    );
    let exc = directive(
        "System",
        "Exception",
        json!({"code":"THROTTLING_EXCEPTION","description":null}),
    );
    assert!(
        matches!(exc.known(), Ok(KnownDirective::Exception(e)) if e.code == "THROTTLING_EXCEPTION" && e.description.is_none())
    );
}

#[test]
fn directive_errors_say_what_was_wrong() {
    let unknown = directive("Alerts", "SetAlert", json!({}));
    let err = unknown.known().expect_err("unsupported");
    assert!(matches!(err, DirectiveError::Unsupported { .. }));
    assert_eq!(
        err.exception_type(),
        ExceptionErrorType::UnsupportedOperation
    );

    let no_timeout = directive("SpeechRecognizer", "ExpectSpeech", json!({}));
    let err = no_timeout.known().expect_err("missing field");
    assert!(err.to_string().contains("timeoutInMilliseconds"), "{err}");
    assert_eq!(
        err.exception_type(),
        ExceptionErrorType::UnsupportedOperation
    );

    let http_url = directive(
        "SpeechSynthesizer",
        "Speak",
        json!({"url":"https://x/a.mp3","format":"AUDIO_MPEG","token":"t"}),
    );
    let err = http_url.known().expect_err("not cid");
    assert!(err.to_string().contains("cid:"), "{err}");
    assert_eq!(
        err.exception_type(),
        ExceptionErrorType::UnexpectedInformationReceived
    );

    let bad_endpoint = directive("System", "SetEndpoint", json!({"endpoint":"http://plain"}));
    assert!(matches!(
        bad_endpoint.known(),
        Err(DirectiveError::Invalid { .. })
    ));
    let wrong_type = directive("System", "Exception", json!({"code":42}));
    assert!(matches!(
        wrong_type.known(),
        Err(DirectiveError::BadPayload { .. })
    ));
}

#[test]
fn bad_envelopes_are_errors() {
    for text in [
        &b"not json"[..],
        br#"{"directive":{"payload":{}}}"#,
        br#"{"event":{}}"#,
        b"",
    ] {
        assert!(
            matches!(parse_directive(text), Err(MessageError::Json { .. })),
            "{:?}",
            text
        );
    }
}

#[test]
fn exception_bodies_parse() {
    let bare = br#"{"header":{"namespace":"System","name":"Exception","messageId":"m"},
        "payload":{"code":"UNAUTHORIZED_REQUEST_EXCEPTION","description":"Unable to authenticate the request."}}"#;
    let exc = parse_exception_body(bare).expect("documented shape");
    assert_eq!(exc.payload.code, "UNAUTHORIZED_REQUEST_EXCEPTION");
    assert_eq!(exc.message_id.as_deref(), Some("m"));
    let wrapped = br#"{"directive":{"header":{"namespace":"System","name":"Exception","messageId":"m"},"payload":{"code":"INVALID_REQUEST_EXCEPTION"}}}"#;
    assert_eq!(
        parse_exception_body(wrapped)
            .expect("wrapped")
            .payload
            .description,
        None
    );
    let no_id = br#"{"header":{"namespace":"System","name":"Exception"},"payload":{"code":"THROTTLING_EXCEPTION"}}"#;
    assert_eq!(
        parse_exception_body(no_id)
            .expect("no messageId")
            .message_id,
        None
    );
    let other = br#"{"header":{"namespace":"System","name":"Other","messageId":"m"},"payload":{"code":"x"}}"#;
    assert!(matches!(
        parse_exception_body(other),
        Err(MessageError::NotAnException { .. })
    ));
    let missing =
        br#"{"header":{"namespace":"System","name":"Exception","messageId":"m"},"payload":{}}"#;
    let err = parse_exception_body(missing).expect_err("no code");
    assert!(err.to_string().contains("code"), "{err}");
    let huge = vec![b' '; 5000];
    assert!(matches!(
        parse_exception_body(&huge),
        Err(MessageError::TooLarge(5000))
    ));
}
