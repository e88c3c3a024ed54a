//! What AVS checks on a Recognize woken by a wake word (initiator type
//! WAKEWORD, SpeechRecognizer 2.x): the payload names the word (`ALEXA`)
//! and where it lies in the streamed audio (`wakeWordIndices`, in samples
//! at 16 kHz), the word is inside the audio, and the audio begins about
//! 500 ms before it, so the cloud can verify the word. A wake word is a
//! NEAR_FIELD or FAR_FIELD request, which the cloud ends with StopCapture.
//!
//! The word must be one the device declared: SpeechRecognizer 2.3 (the
//! version that added both the Recognize's `wakeWord` and the capability's
//! `wakeWords` configuration) with `{"wakeWords": [{"scopes": ["DEFAULT"],
//! "values": [["ALEXA"]]}]}` (AVS "SpeechRecognizer 2.3", capability
//! assertion). The configuration itself is checked when the Discovery
//! report arrives.

use serde_json::Value;

use super::capabilities::Declaration;
use super::rules::Refusal;

/// The one scope AVS documents for `wakeWords`.
const SCOPES: &[&str] = &["DEFAULT"];
/// The wake words Alexa devices offer in English (the word is upper case in
/// the configuration and in the Recognize).
const WORDS: &[&str] = &["ALEXA", "AMAZON", "ECHO", "COMPUTER"];

/// Check a SpeechRecognizer `configurations` object (2.3 and later); the
/// error names the key under `configurations`.
pub(super) fn check_configurations(conf: &Value) -> Result<(), String> {
    let map = conf.as_object().ok_or("is not an object")?;
    if let Some(other) = map.keys().find(|k| *k != "wakeWords") {
        return Err(format!(
            "{other} is not a SpeechRecognizer configuration (only wakeWords is)"
        ));
    }
    let Some(list) = map.get("wakeWords") else {
        return Err("wakeWords is missing".into());
    };
    let list = list
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or("wakeWords is not a non-empty array")?;
    for (i, entry) in list.iter().enumerate() {
        let at = format!("wakeWords[{i}]");
        let e = entry
            .as_object()
            .ok_or_else(|| format!("{at} is not an object"))?;
        if let Some(other) = e
            .keys()
            .find(|k| !matches!(k.as_str(), "scopes" | "values"))
        {
            return Err(format!(
                "{at}.{other} is not a key of a wakeWords entry (scopes, values)"
            ));
        }
        let scopes = e
            .get("scopes")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{at}.scopes is missing or not a non-empty array"))?;
        for (j, scope) in scopes.iter().enumerate() {
            match scope.as_str() {
                Some(s) if SCOPES.contains(&s) => {}
                _ => {
                    return Err(format!(
                        "{at}.scopes[{j}] {scope} is not a wake-word scope ({})",
                        SCOPES.join(", ")
                    ));
                }
            }
        }
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{at}.values is missing or not a non-empty array of arrays"))?;
        for (j, set) in values.iter().enumerate() {
            let words = set
                .as_array()
                .filter(|w| !w.is_empty())
                .ok_or_else(|| format!("{at}.values[{j}] is not a non-empty array of words"))?;
            for word in words {
                match word.as_str() {
                    Some(w) if WORDS.contains(&w) => {}
                    _ => {
                        return Err(format!(
                            "{at}.values[{j}]: {word} is not a wake word AVS knows ({})",
                            WORDS.join(", ")
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A WAKEWORD Recognize is taken only from a device that declared its word
/// (see the module's notes); other initiators pass.
pub(super) fn check_declared(
    initiator: Option<&Value>,
    declared: Option<&Declaration>,
) -> Result<(), Refusal> {
    let Some(init) =
        initiator.filter(|i| i.get("type").and_then(Value::as_str) == Some("WAKEWORD"))
    else {
        return Ok(());
    };
    let word = init
        .pointer("/payload/wakeWord")
        .and_then(Value::as_str)
        .unwrap_or("ALEXA");
    let speech = declared.and_then(|d| {
        d.capabilities
            .iter()
            .find(|c| c.interface == "SpeechRecognizer")
    });
    let listed = speech
        .and_then(|c| c.configurations.as_ref())
        .and_then(|c| c.get("wakeWords"))
        .and_then(Value::as_array)
        .is_some_and(|entries| {
            entries.iter().any(|e| {
                let in_default = e
                    .get("scopes")
                    .and_then(Value::as_array)
                    .is_some_and(|s| s.iter().any(|s| s == "DEFAULT"));
                let has_word = e.get("values").and_then(Value::as_array).is_some_and(|v| {
                    v.iter()
                        .flat_map(|set| set.as_array())
                        .flatten()
                        .any(|w| w == word)
                });
                in_default && has_word
            })
        });
    if listed {
        return Ok(());
    }
    let what = match (declared, speech) {
        (None, _) => "the device sent no Alexa.Discovery.AddOrUpdateReport".to_string(),
        (Some(_), None) => "the device did not declare SpeechRecognizer".to_string(),
        (Some(_), Some(c)) if c.configurations.is_none() => format!(
            "the device declared SpeechRecognizer {} without a wakeWords configuration",
            c.version
        ),
        (Some(_), Some(_)) => format!("the device's wakeWords do not list {word} in scope DEFAULT"),
    };
    Err(Refusal::invalid(format!(
        "event.payload.initiator: a WAKEWORD Recognize for {word} needs SpeechRecognizer 2.3 \
         declared with configurations.wakeWords listing [\"{word}\"] in scope DEFAULT; {what}"
    )))
}

/// Audio AVS wants before the word: 500 ms at 16 kHz, with 10 % slack for
/// a device that cuts its pre-roll on a chunk or frame boundary.
pub(super) const MIN_PREROLL_SAMPLES: u64 = 7_200;

/// The word's start and end (samples) when the initiator is WAKEWORD;
/// `None` for any other initiator. Checked when the metadata arrives.
pub(super) fn check_initiator(
    initiator: Option<&Value>,
    profile: &str,
) -> Result<Option<(u64, u64)>, Refusal> {
    let Some(init) =
        initiator.filter(|i| i.get("type").and_then(Value::as_str) == Some("WAKEWORD"))
    else {
        return Ok(None);
    };
    let bad = |what: String| Refusal::invalid(format!("event.payload.initiator: {what}"));
    if profile == "CLOSE_TALK" {
        return Err(bad(
            "a WAKEWORD request must use profile NEAR_FIELD or FAR_FIELD, not CLOSE_TALK".into(),
        ));
    }
    let payload = init
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or_else(|| bad("type WAKEWORD needs a payload object".into()))?;
    match payload.get("wakeWord").and_then(Value::as_str) {
        Some("ALEXA") => {}
        Some(other) => return Err(bad(format!("payload.wakeWord `{other}` is not ALEXA"))),
        None => {
            return Err(bad(
                "payload.wakeWord is missing (it must be \"ALEXA\")".into()
            ));
        }
    }
    let indices = payload
        .get("wakeWordIndices")
        .filter(|p| p.is_object())
        .ok_or_else(|| bad("payload.wakeWordIndices is missing".into()))?;
    let index = |key: &str| {
        indices.get(key).and_then(Value::as_u64).ok_or_else(|| {
            bad(format!(
                "payload.wakeWordIndices.{key} is missing or not a whole number of samples"
            ))
        })
    };
    let (start, end) = (index("startIndexInSamples")?, index("endIndexInSamples")?);
    if start >= end {
        return Err(bad(format!(
            "wakeWordIndices start {start} is not before end {end}"
        )));
    }
    if start < MIN_PREROLL_SAMPLES {
        return Err(bad(format!(
            "wakeWordIndices.startIndexInSamples {start} leaves less than 500 ms of audio \
             before the wake word (stream from 500 ms before it: start at about 8000)"
        )));
    }
    Ok(Some((start, end)))
}

/// The word must end inside the audio that was streamed (`audio_bytes` of
/// 16-bit samples). Checked once the audio part is complete.
pub(super) fn check_inside(
    initiator: &Value,
    profile: &str,
    audio_bytes: u64,
) -> Result<(), Refusal> {
    let Ok(Some((_, end))) = check_initiator(Some(initiator), profile) else {
        return Ok(());
    };
    let samples = audio_bytes / 2;
    if end > samples {
        return Err(Refusal::invalid(format!(
            "event.payload.initiator: wakeWordIndices.endIndexInSamples {end} is past the end \
             of the audio ({samples} samples)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wake_words_configurations_are_checked_key_by_key() {
        let good = json!({"wakeWords": [{"scopes": ["DEFAULT"], "values": [["ALEXA"]]}]});
        assert_eq!(check_configurations(&good), Ok(()));
        let cases = [
            (json!([]), "not an object"),
            (json!({}), "wakeWords is missing"),
            (json!({"wakeWords": [], }), "non-empty array"),
            (
                json!({"wakeWords": [{"scopes": ["DEFAULT"], "values": [["ALEXA"]]}], "x": 1}),
                "x is not",
            ),
            (
                json!({"wakeWords": [{"scopes": ["KITCHEN"], "values": [["ALEXA"]]}]}),
                "scopes[0]",
            ),
            (
                json!({"wakeWords": [{"scopes": [], "values": [["ALEXA"]]}]}),
                "scopes is missing",
            ),
            (
                json!({"wakeWords": [{"scopes": ["DEFAULT"], "values": [["alexa"]]}]}),
                "\"alexa\" is not a wake word",
            ),
            (
                json!({"wakeWords": [{"scopes": ["DEFAULT"], "values": ["ALEXA"]}]}),
                "values[0] is not",
            ),
            (
                json!({"wakeWords": [{"scopes": ["DEFAULT"], "words": [["ALEXA"]]}]}),
                "words is not a key",
            ),
        ];
        for (conf, named) in cases {
            let err = check_configurations(&conf).expect_err(&conf.to_string());
            assert!(err.contains(named), "{conf}: {err}");
        }
    }

    fn wake(start: Value, end: Value, word: &str) -> Value {
        json!({"type": "WAKEWORD", "payload": {
            "wakeWordIndices": {"startIndexInSamples": start, "endIndexInSamples": end},
            "wakeWord": word}})
    }

    #[test]
    fn a_good_wakeword_initiator_passes_and_others_are_untouched() {
        let ok = wake(json!(8000), json!(18000), "ALEXA");
        assert_eq!(
            check_initiator(Some(&ok), "NEAR_FIELD"),
            Ok(Some((8000, 18000)))
        );
        assert_eq!(check_inside(&ok, "FAR_FIELD", 40_000), Ok(()));
        assert_eq!(
            check_initiator(Some(&json!({"type": "TAP"})), "NEAR_FIELD"),
            Ok(None)
        );
        assert_eq!(check_initiator(None, "CLOSE_TALK"), Ok(None));
    }

    #[test]
    fn what_avs_would_refuse_is_refused_with_the_field_named() {
        let cases = [
            (
                wake(json!(8000), json!(18000), "ALEXA"),
                "CLOSE_TALK",
                "CLOSE_TALK",
            ),
            (
                wake(json!(8000), json!(18000), "COMPUTER"),
                "NEAR_FIELD",
                "wakeWord",
            ),
            (
                wake(json!(18000), json!(8000), "ALEXA"),
                "NEAR_FIELD",
                "not before",
            ),
            (
                wake(json!(8000), json!(8000), "ALEXA"),
                "NEAR_FIELD",
                "not before",
            ),
            (
                wake(json!(100), json!(9000), "ALEXA"),
                "NEAR_FIELD",
                "500 ms",
            ),
            (
                wake(json!(-1), json!(9000), "ALEXA"),
                "NEAR_FIELD",
                "startIndexInSamples",
            ),
            (
                wake(json!("8000"), json!(9000), "ALEXA"),
                "NEAR_FIELD",
                "startIndexInSamples",
            ),
            (json!({"type": "WAKEWORD"}), "NEAR_FIELD", "payload"),
            (
                json!({"type": "WAKEWORD", "payload": {"wakeWord": "ALEXA"}}),
                "NEAR_FIELD",
                "wakeWordIndices",
            ),
        ];
        for (init, profile, named) in cases {
            let err = check_initiator(Some(&init), profile).expect_err(&init.to_string());
            assert!(
                err.description.contains(named),
                "{init}: {}",
                err.description
            );
            assert_eq!(err.status, 400);
        }
        let ok = wake(json!(8000), json!(18000), "ALEXA");
        let err = check_inside(&ok, "NEAR_FIELD", 30_000).expect_err("past the audio");
        assert!(
            err.description.contains("past the end"),
            "{}",
            err.description
        );
    }
}
