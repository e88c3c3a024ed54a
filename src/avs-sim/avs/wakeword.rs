//! What AVS checks on a Recognize woken by a wake word (initiator type
//! WAKEWORD, SpeechRecognizer 2.x): the payload names the word (`ALEXA`)
//! and where it lies in the streamed audio (`wakeWordIndices`, in samples
//! at 16 kHz), the word is inside the audio, and the audio begins about
//! 500 ms before it, so the cloud can verify the word. A wake word is a
//! NEAR_FIELD or FAR_FIELD request, which the cloud ends with StopCapture.

use serde_json::Value;

use super::rules::Refusal;

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
