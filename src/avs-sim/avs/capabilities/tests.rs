use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "the-access-token";

fn capability(interface: &str, version: &str) -> Value {
    json!({"type": "AlexaInterface", "interface": interface, "version": version})
}

/// A report as avsd sends it, with `capabilities`.
fn report(capabilities: Value) -> Value {
    json!({"event": {
        "header": {"namespace": "Alexa.Discovery", "name": "AddOrUpdateReport",
                   "payloadVersion": "3", "messageId": "m", "eventCorrelationToken": "c"},
        "payload": {
            "scope": {"type": "BearerToken", "token": TOKEN},
            "endpoints": [{
                "endpointId": "prod::0001",
                "registration": {"productId": "prod", "deviceSerialNumber": "0001"},
                "manufacturerName": "avsd",
                "description": "a device",
                "friendlyName": "",
                "displayCategories": ["ALEXA_VOICE_ENABLED"],
                "capabilities": capabilities,
            }],
        },
    }})
}

fn good() -> Value {
    report(json!([
        capability("System", "1.0"),
        capability("SpeechRecognizer", "2.0"),
        capability("SpeechSynthesizer", "1.3"),
    ]))
}

fn refused(v: &Value) -> String {
    let r = check_report(v, TOKEN).unwrap_err();
    assert_eq!((r.status, r.code), (400, "INVALID_REQUEST_EXCEPTION"));
    r.description
}

#[test]
fn a_well_formed_report_is_remembered() {
    let d = check_report(&good(), TOKEN).unwrap();
    assert_eq!(d.endpoint_id, "prod::0001");
    assert_eq!(
        (d.product_id.as_str(), d.device_serial_number.as_str()),
        ("prod", "0001")
    );
    let names: Vec<_> = d
        .capabilities
        .iter()
        .map(|c| (c.interface.as_str(), c.version.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("System", "1.0"),
            ("SpeechRecognizer", "2.0"),
            ("SpeechSynthesizer", "1.3")
        ]
    );
    assert_eq!(d.version("SpeechSynthesizer"), Some("1.3"));
    assert_eq!(d.version("Speaker"), None);
}

#[test]
fn unknown_interfaces_versions_and_duplicates_are_refused() {
    let e = refused(&report(json!([capability("Speakr", "1.0")])));
    assert!(
        e.contains("`Speakr` is not an interface avs-sim implements"),
        "{e}"
    );
    let e = refused(&report(json!([capability("SpeechSynthesizer", "9.9")])));
    assert!(e.contains("version `9.9`"), "{e}");
    let e = refused(&report(json!([
        capability("System", "1.0"),
        capability("System", "1.0")
    ])));
    assert!(
        e.contains("declares System again (first at capabilities[0])"),
        "{e}"
    );
    let e = refused(&report(json!([capability("Alexa.Discovery", "3.0")])));
    assert!(e.contains("implicit"), "{e}");
}

#[test]
fn malformed_entries_are_refused() {
    let mut c = capability("System", "1.0");
    c["type"] = json!("SomethingElse");
    assert!(refused(&report(json!([c]))).contains("AlexaInterface"));
    let e = refused(&report(
        json!([{"type": "AlexaInterface", "interface": "System"}]),
    ));
    assert!(e.contains("capabilities[0].version is missing"), "{e}");
    assert!(refused(&report(json!([]))).contains("1 to 100"));
    assert!(refused(&report(json!("System"))).contains("not an array"));
    // Configurations only where the interface version has them.
    let mut c = capability("System", "1.0");
    c["configurations"] = json!({"x": 1});
    assert!(refused(&report(json!([c]))).contains("has no configurations"));
    let mut c = capability("SpeechRecognizer", "2.3");
    c["configurations"] = json!({"wakeWords": [{"scopes": ["DEFAULT"], "values": [["ALEXA"]]}]});
    assert!(check_report(&report(json!([c])), TOKEN).is_ok());
    // A declared list names at least one word (wakeword.rs checks the rest).
    c["configurations"] = json!({"wakeWords": []});
    assert!(refused(&report(json!([c]))).contains("non-empty"));
    let mut c = capability("SpeechRecognizer", "2.3");
    c["configurations"] = json!([]);
    assert!(refused(&report(json!([c]))).contains("not an object"));
}

#[test]
fn header_scope_and_endpoint_are_checked() {
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v = good();
        f(&mut v);
        refused(&v)
    };
    let e = edit(&|v| v["event"]["header"]["payloadVersion"] = json!("2"));
    assert!(e.contains("payloadVersion"), "{e}");
    let e = edit(&|v| {
        v["event"]["header"]
            .as_object_mut()
            .unwrap()
            .remove("eventCorrelationToken");
    });
    assert!(e.contains("eventCorrelationToken is missing"), "{e}");
    let e = edit(&|v| v["event"]["payload"]["scope"]["token"] = json!("another"));
    assert!(e.contains("not the access token"), "{e}");
    let e = edit(&|v| v["event"]["payload"]["scope"]["type"] = json!("Basic"));
    assert!(e.contains("BearerToken"), "{e}");
    let e = edit(&|v| ep(v)["endpointId"] = json!("bad/id"));
    assert!(e.contains("endpointId holds `/`"), "{e}");
    let e = edit(&|v| ep(v)["manufacturerName"] = json!(""));
    assert!(e.contains("manufacturerName must hold 1 to 128"), "{e}");
    let e = edit(&|v| ep(v)["description"] = json!("x".repeat(129)));
    assert!(e.contains("description must hold 1 to 128"), "{e}");
    let e = edit(&|v| ep(v)["displayCategories"] = json!([]));
    assert!(e.contains("displayCategories"), "{e}");
    let e = edit(&|v| {
        ep(v).as_object_mut().unwrap().remove("registration");
    });
    assert!(e.contains("registration is missing"), "{e}");
    let e = edit(&|v| ep(v)["registration"]["deviceSerialNumber"] = json!(""));
    assert!(e.contains("deviceSerialNumber"), "{e}");
    let e = edit(&|v| {
        let second = v["event"]["payload"]["endpoints"][0].clone();
        v["event"]["payload"]["endpoints"]
            .as_array_mut()
            .unwrap()
            .push(second);
    });
    assert!(e.contains("lists 2 endpoints"), "{e}");
    let e = edit(&|v| v["event"]["payload"]["endpoints"] = json!([]));
    assert!(e.contains("endpoints is empty"), "{e}");
}

fn ep(v: &mut Value) -> &mut Value {
    &mut v["event"]["payload"]["endpoints"][0]
}

fn speech_state(activity: &str) -> Value {
    json!({"header": {"namespace": "SpeechSynthesizer", "name": "SpeechState"},
           "payload": {"token": "", "offsetInMilliseconds": 0, "playerActivity": activity}})
}

#[test]
fn context_carries_only_declared_interfaces_in_their_shape() {
    let declared = check_report(&good(), TOKEN).unwrap();
    let d = Some(&declared);
    assert!(check_context(&[speech_state("FINISHED")], d).is_ok());
    assert!(check_context(&[speech_state("INTERRUPTED")], d).is_ok());
    assert!(check_context(&[], d).is_ok());

    // Not declared.
    let only_system = check_report(&report(json!([capability("System", "1.0")])), TOKEN).unwrap();
    let e = check_context(&[speech_state("FINISHED")], Some(&only_system)).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(
        e.description.contains("did not declare SpeechSynthesizer"),
        "{}",
        e.description
    );
    assert!(
        e.description.contains("it declared System 1.0"),
        "{}",
        e.description
    );

    // INTERRUPTED came with SpeechSynthesizer 1.3.
    let v10 = check_report(
        &report(json!([capability("SpeechSynthesizer", "1.0")])),
        TOKEN,
    )
    .unwrap();
    let e = check_context(&[speech_state("INTERRUPTED")], Some(&v10)).unwrap_err();
    assert!(
        e.description
            .contains("PLAYING, FINISHED for SpeechSynthesizer 1.0"),
        "{}",
        e.description
    );

    // The documented shape.
    let mut bad = speech_state("FINISHED");
    bad["payload"]["offsetInMilliseconds"] = json!(-1);
    assert!(
        check_context(&[bad], d)
            .unwrap_err()
            .description
            .contains("offsetInMilliseconds")
    );
    let mut bad = speech_state("FINISHED");
    bad["payload"].as_object_mut().unwrap().remove("token");
    assert!(
        check_context(&[bad], d)
            .unwrap_err()
            .description
            .contains("payload.token")
    );
    assert!(
        check_context(&[speech_state("SINGING")], d)
            .unwrap_err()
            .description
            .contains("SINGING")
    );

    // Each state once; names the interface has.
    let e = check_context(&[speech_state("FINISHED"), speech_state("PLAYING")], d).unwrap_err();
    assert!(e.description.contains("repeats"), "{}", e.description);
    let odd = json!({"header": {"namespace": "System", "name": "State"}, "payload": {}});
    assert!(
        check_context(&[odd], d)
            .unwrap_err()
            .description
            .contains("(it has none)")
    );
}

#[test]
fn without_a_discovery_context_names_interfaces_avs_sim_implements() {
    assert!(check_context(&[speech_state("INTERRUPTED")], None).is_ok());
    let other = json!({"header": {"namespace": "Notifications", "name": "IndicatorState"},
                       "payload": {"isEnabled": false, "isVisualIndicatorPersisted": false}});
    let e = check_context(&[other], None).unwrap_err();
    assert!(e.description.contains("Notifications"), "{}", e.description);
    let playback = |activity: &str| {
        json!({"header": {"namespace": "AudioPlayer", "name": "PlaybackState"},
               "payload": {"token": "", "offsetInMilliseconds": 0, "playerActivity": activity}})
    };
    assert!(check_context(&[playback("IDLE")], None).is_ok());
    let e = check_context(&[playback("LOUD")], None).unwrap_err();
    assert!(
        e.description.contains("playerActivity"),
        "{}",
        e.description
    );
    let rs = json!({"header": {"namespace": "SpeechRecognizer", "name": "RecognizerState"},
                    "payload": {"wakeword": "ALEXA"}});
    assert!(check_context(&[rs], None).is_ok());
    let rs = json!({"header": {"namespace": "SpeechRecognizer", "name": "RecognizerState"},
                    "payload": {}});
    assert!(
        check_context(&[rs], None)
            .unwrap_err()
            .description
            .contains("wakeword")
    );
    let odd = json!({"header": {"namespace": "SpeechSynthesizer", "name": "VoiceState"},
                     "payload": {}});
    let e = check_context(&[odd], None).unwrap_err().description;
    assert!(
        e.contains("no context entry named VoiceState (only SpeechState)"),
        "{e}"
    );
}

#[test]
fn volume_state_is_a_whole_volume_from_0_to_100_and_a_muted_flag() {
    let entry = |payload: Value| json!({"header": {"namespace": "Speaker", "name": "VolumeState"}, "payload": payload});
    assert!(check_context(&[entry(json!({"volume": 30, "muted": false}))], None).is_ok());
    for bad in [
        json!({"volume": 150, "muted": false}),
        json!({"volume": -1, "muted": false}),
        json!({"volume": 30.5, "muted": false}),
        json!({"volume": "30", "muted": false}),
        json!({"muted": false}),
        json!({"volume": 30, "muted": "false"}),
        json!({"volume": 30}),
    ] {
        let e = check_context(&[entry(bad.clone())], None).unwrap_err();
        assert!(
            e.description.contains("Speaker.VolumeState"),
            "{bad}: {e:?}"
        );
    }
}
