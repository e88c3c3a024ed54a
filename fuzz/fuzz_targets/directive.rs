//! Feeds arbitrary bytes to the two JSON parsers of what AVS sends:
//! `parse_directive` (a JSON part of a directive stream) with
//! `Directive::known` behind it, and `parse_exception_body` (a plain-JSON
//! error response). Checks that neither panics, and:
//!
//! - a refused part is a `MessageError::Json` whose text says where
//!   (`line`/`column`), since the router reports it to AVS verbatim;
//! - a parsed directive survives serialising and parsing again, and
//!   `known` gives the same answer for both;
//! - `known` accepts exactly the namespace/name pairs it lists, its payload
//!   rules hold (`cid:` URLs, `https` endpoints), and every refusal names
//!   the directive (`Namespace.Name`);
//! - a `System.Exception` directive is read the same by both parsers.
//!
//! Input: the bytes are the JSON text, as they come out of the multipart
//! parser.
//!
//! The parsers are the `avs-proto` crate's, as in the multipart target.

#![no_main]

use avs_proto as avs;

use avs::message::{
    Directive, DirectiveError, KnownDirective, MAX_EXCEPTION_BODY, MessageError, parse_directive,
    parse_exception_body,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The directives `known` interprets.
const KNOWN: &[(&str, &str)] = &[
    ("SpeechRecognizer", "StopCapture"),
    ("SpeechRecognizer", "ExpectSpeech"),
    ("SpeechSynthesizer", "Speak"),
    ("System", "ResetUserInactivity"),
    ("System", "SetEndpoint"),
    ("System", "RevokeAuthorization"),
    ("System", "Exception"),
];

fuzz_target!(|input: &[u8]| {
    match parse_directive(input) {
        Ok(directive) => check_directive(&directive),
        Err(MessageError::Json { what, source }) => {
            assert_eq!(what, "directive");
            let text = source.to_string();
            assert!(
                text.contains(" line ") && text.contains(" column "),
                "the error does not say where: {text}"
            );
        }
        Err(other) => panic!("parse_directive gave {other:?}"),
    }
    check_exception_body(input);
});

fn check_directive(d: &Directive) {
    let (ns, name) = (d.header.namespace.as_str(), d.header.name.as_str());
    assert_eq!(d.qualified_name(), format!("{ns}.{name}"));
    let known = d.known();
    check_known(d, &known);

    // Serialise and parse again: the same directive, the same verdict.
    let text = serde_json::to_vec(&json!({ "directive": d })).expect("serialises");
    let again = match parse_directive(&text) {
        Ok(again) => again,
        Err(e) => panic!("re-parse of {} failed: {e}", String::from_utf8_lossy(&text)),
    };
    assert_eq!(again.header, d.header);
    assert!(
        same(&again.payload, &d.payload),
        "payload changed: {} vs {}",
        again.payload,
        d.payload
    );
    let known_again = again.known();
    assert_eq!(
        verdict(&known_again),
        verdict(&known),
        "known() changed after a round trip"
    );

    // A System.Exception directive, sent as an error body, means the same.
    if let Ok(KnownDirective::Exception(payload)) = &known
        && text.len() <= MAX_EXCEPTION_BODY
    {
        let exc = match parse_exception_body(&text) {
            Ok(exc) => exc,
            Err(e) => panic!(
                "a System.Exception directive is not an exception body: {e}: {}",
                String::from_utf8_lossy(&text)
            ),
        };
        assert_eq!(&exc.payload, payload);
        assert_eq!(
            exc.message_id.as_deref(),
            Some(d.header.message_id.as_str())
        );
    }
}

fn check_known(d: &Directive, known: &Result<KnownDirective, DirectiveError>) {
    let pair = (d.header.namespace.as_str(), d.header.name.as_str());
    let listed = KNOWN.contains(&pair);
    match known {
        Ok(k) => {
            assert!(listed, "{} accepted but not listed", d.qualified_name());
            let want = match k {
                KnownDirective::StopCapture => ("SpeechRecognizer", "StopCapture"),
                KnownDirective::ExpectSpeech(_) => ("SpeechRecognizer", "ExpectSpeech"),
                KnownDirective::Speak(_) => ("SpeechSynthesizer", "Speak"),
                KnownDirective::ResetUserInactivity => ("System", "ResetUserInactivity"),
                KnownDirective::SetEndpoint(_) => ("System", "SetEndpoint"),
                KnownDirective::RevokeAuthorization => ("System", "RevokeAuthorization"),
                KnownDirective::Exception(_) => ("System", "Exception"),
            };
            assert_eq!(pair, want, "wrong variant");
            match k {
                KnownDirective::Speak(s) => {
                    assert!(s.url.starts_with("cid:"), "Speak url {:?}", s.url);
                    let _ = s.content_id();
                }
                KnownDirective::SetEndpoint(s) => {
                    let url = url::Url::parse(&s.endpoint).expect("endpoint is a URL");
                    assert_eq!(url.scheme(), "https");
                }
                _ => {}
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&d.qualified_name()),
                "the error does not name the directive: {text}"
            );
            let unsupported = matches!(e, DirectiveError::Unsupported { .. });
            assert_eq!(unsupported, !listed, "{text}");
            let _ = e.exception_type();
        }
    }
}

/// What `known` decided, without serde's positions (which move when the
/// text is re-serialised).
fn verdict(known: &Result<KnownDirective, DirectiveError>) -> String {
    match known {
        Ok(k) => match k {
            KnownDirective::ExpectSpeech(e) => {
                format!("ExpectSpeech {}", e.timeout_in_milliseconds)
            }
            other => format!("{other:?}"),
        },
        Err(DirectiveError::Unsupported { .. }) => "unsupported".into(),
        Err(DirectiveError::BadPayload { .. }) => "bad payload".into(),
        Err(DirectiveError::Invalid { reason, .. }) => format!("invalid: {reason}"),
    }
}

/// JSON equality, except that floats may move by a few ulps: serde_json
/// (without its `float_roundtrip` feature, as avsd builds it) may read a
/// 17-digit float back one ulp off. That is serde_json's trade-off, not a
/// bug of avsd's.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => {
                        (p - q).abs() <= p.abs().max(q.abs()) * 8.0 * f64::EPSILON
                    }
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn check_exception_body(input: &[u8]) {
    match parse_exception_body(input) {
        Ok(_) => assert!(input.len() <= MAX_EXCEPTION_BODY),
        Err(MessageError::TooLarge(n)) => {
            assert_eq!(n, input.len());
            assert!(n > MAX_EXCEPTION_BODY);
        }
        Err(e) => {
            assert!(input.len() <= MAX_EXCEPTION_BODY);
            assert!(!e.to_string().is_empty());
        }
    }
}
