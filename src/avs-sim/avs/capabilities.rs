//! What a device says it implements, checked as AVS checks it: the
//! `Alexa.Discovery.AddOrUpdateReport` event (Alexa.Discovery 3.0), the
//! interfaces and versions the stand-in implements, and every later
//! event's `context`, which may carry only entries of declared interfaces
//! in the shape their version documents.
//!
//! Sources: AVS "Alexa.Discovery 3.0" (payloadVersion "3", the endpoint
//! object, `Alexa.Discovery` itself never listed, at most 100 capabilities
//! and 300 endpoints), AVS "About AVS Versions" (the event header with its
//! `eventCorrelationToken`), the Alexa Discovery objects reference (the
//! endpointId, manufacturerName and description limits), SpeechSynthesizer
//! 1.0 and 1.3 (SpeechState; INTERRUPTED only from 1.3), SpeechRecognizer
//! 2.x (RecognizerState, `wakeWords` configurations from 2.3).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::rules::Refusal;

/// The interfaces this stand-in implements: name, versions, and the
/// context entries each may carry. Adding an interface to the stand-in
/// means adding a row here (and its entry check in [`check_entry`]).
const IMPLEMENTED: &[Implemented] = &[
    Implemented {
        interface: "System",
        versions: &["1.0"],
        context: &[],
        configurations: None,
    },
    Implemented {
        interface: "SpeechRecognizer",
        versions: &["2.0", "2.1", "2.2", "2.3"],
        context: &["RecognizerState"],
        // wakeWords, for devices with a wake word, from 2.3 on.
        configurations: Some("2.3"),
    },
    Implemented {
        interface: "SpeechSynthesizer",
        versions: &["1.0", "1.1", "1.2", "1.3"],
        context: &["SpeechState"],
        configurations: None,
    },
    Implemented {
        interface: "Speaker",
        versions: &["1.0"],
        context: &["VolumeState"],
        configurations: None,
    },
    Implemented {
        interface: "AudioPlayer",
        versions: &["1.0", "1.1", "1.2", "1.3", "1.4"],
        context: &["PlaybackState"],
        // fingerprint (the player software), from 1.4 on.
        configurations: Some("1.4"),
    },
    Implemented {
        interface: "PlaybackController",
        versions: &["1.0", "1.1"],
        context: &[],
        configurations: None,
    },
    Implemented {
        interface: "Alerts",
        versions: &["1.0", "1.1", "1.3", "1.4", "1.5"],
        context: &["AlertsState"],
        // maximumAlerts, from 1.1 on.
        configurations: Some("1.1"),
    },
];

/// One row of [`IMPLEMENTED`].
struct Implemented {
    interface: &'static str,
    versions: &'static [&'static str],
    context: &'static [&'static str],
    /// From which version the interface has a `configurations` object
    /// (`None`: never).
    configurations: Option<&'static str>,
}

fn implemented(interface: &str) -> Option<&'static Implemented> {
    IMPLEMENTED.iter().find(|i| i.interface == interface)
}

/// Whether the stand-in implements `interface` at any version.
pub(super) fn is_implemented(interface: &str) -> bool {
    implemented(interface).is_some()
}

/// The most capabilities one endpoint may list (Alexa.Discovery limits).
const MAX_CAPABILITIES: usize = 100;
/// Characters an endpointId may hold besides letters and digits.
const ENDPOINT_ID_EXTRA: &str = " _-=#;:?@&";

/// One accepted capability entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Declared {
    /// The interface, e.g. `SpeechSynthesizer`.
    pub interface: String,
    /// Its version, `MAJOR.MINOR`.
    pub version: String,
    /// Its `configurations`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configurations: Option<Value>,
}

/// What an accepted AddOrUpdateReport declared for the device's endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Declaration {
    /// The device's endpointId.
    pub endpoint_id: String,
    /// `registration.productId`.
    pub product_id: String,
    /// `registration.deviceSerialNumber`.
    pub device_serial_number: String,
    /// The capabilities, in the order sent.
    pub capabilities: Vec<Declared>,
}

impl Declaration {
    /// The declared version of `interface`, if it was declared.
    pub fn version(&self, interface: &str) -> Option<&str> {
        self.capabilities
            .iter()
            .find(|c| c.interface == interface)
            .map(|c| c.version.as_str())
    }
}

fn invalid(what: String) -> Refusal {
    Refusal::invalid(format!("Alexa.Discovery.AddOrUpdateReport: {what}"))
}

fn string<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, Refusal> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.{key} is missing or not a string")))
}

fn bounded<'a>(v: &'a Value, key: &str, at: &str, max: usize) -> Result<&'a str, Refusal> {
    let s = string(v, key, at)?;
    if s.is_empty() || s.chars().count() > max {
        return Err(invalid(format!(
            "{at}.{key} must hold 1 to {max} characters (it has {})",
            s.chars().count()
        )));
    }
    Ok(s)
}

/// Check a whole AddOrUpdateReport metadata object (`{"event": …}`), sent
/// with the access token `bearer`; what it declares for the device.
pub(super) fn check_report(meta: &Value, bearer: &str) -> Result<Declaration, Refusal> {
    let event = &meta["event"];
    let header = &event["header"];
    let version = string(header, "payloadVersion", "event.header")?;
    if version != "3" {
        return Err(invalid(format!(
            "event.header.payloadVersion is `{version}`; Alexa.Discovery takes \"3\""
        )));
    }
    let correlation = string(header, "eventCorrelationToken", "event.header")?;
    if correlation.is_empty() {
        return Err(invalid(
            "event.header.eventCorrelationToken is empty".into(),
        ));
    }
    let payload = &event["payload"];
    let scope = payload
        .get("scope")
        .filter(|s| s.is_object())
        .ok_or_else(|| invalid("event.payload.scope is missing or not an object".into()))?;
    let kind = string(scope, "type", "event.payload.scope")?;
    if kind != "BearerToken" {
        return Err(invalid(format!(
            "event.payload.scope.type is `{kind}`; a device reports with \"BearerToken\""
        )));
    }
    if string(scope, "token", "event.payload.scope")? != bearer {
        return Err(invalid(
            "event.payload.scope.token is not the access token this request was sent with".into(),
        ));
    }
    let endpoints = payload
        .get("endpoints")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("event.payload.endpoints is missing or not an array".into()))?;
    match endpoints.as_slice() {
        [endpoint] => check_endpoint(endpoint, "event.payload.endpoints[0]"),
        [] => Err(invalid(
            "event.payload.endpoints is empty; list the device's own endpoint".into(),
        )),
        _ => Err(invalid(format!(
            "event.payload.endpoints lists {} endpoints; avs-sim implements only the \
             device's own endpoint (connected endpoints are not simulated)",
            endpoints.len()
        ))),
    }
}

fn check_endpoint(e: &Value, at: &str) -> Result<Declaration, Refusal> {
    if !e.is_object() {
        return Err(invalid(format!("{at} is not an object")));
    }
    let endpoint_id = bounded(e, "endpointId", at, 256)?;
    if let Some(bad) = endpoint_id
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !ENDPOINT_ID_EXTRA.contains(*c))
    {
        return Err(invalid(format!(
            "{at}.endpointId holds `{bad}`; it may hold letters, digits, spaces and {ENDPOINT_ID_EXTRA:?}"
        )));
    }
    bounded(e, "manufacturerName", at, 128)?;
    bounded(e, "description", at, 128)?;
    if let Some(name) = e.get("friendlyName")
        && name.as_str().is_none_or(|n| n.chars().count() > 256)
    {
        return Err(invalid(format!(
            "{at}.friendlyName is not a string of at most 256 characters"
        )));
    }
    let categories = e
        .get("displayCategories")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "{at}.displayCategories is missing, not an array or empty"
            ))
        })?;
    if !categories
        .iter()
        .all(|c| c.as_str().is_some_and(|c| !c.is_empty()))
    {
        return Err(invalid(format!(
            "{at}.displayCategories holds something that is not a category name"
        )));
    }
    let registration = e
        .get("registration")
        .filter(|r| r.is_object())
        .ok_or_else(|| {
            invalid(format!(
                "{at}.registration is missing: the device's own endpoint carries its \
                 productId and deviceSerialNumber"
            ))
        })?;
    let reg_at = format!("{at}.registration");
    let product_id = bounded(registration, "productId", &reg_at, 256)?;
    let dsn = bounded(registration, "deviceSerialNumber", &reg_at, 256)?;
    let list = e
        .get("capabilities")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("{at}.capabilities is missing or not an array")))?;
    if list.is_empty() || list.len() > MAX_CAPABILITIES {
        return Err(invalid(format!(
            "{at}.capabilities lists {} entries; an endpoint lists 1 to {MAX_CAPABILITIES}",
            list.len()
        )));
    }
    let mut capabilities: Vec<Declared> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let entry = check_capability(c, &format!("{at}.capabilities[{i}]"))?;
        if let Some(j) = capabilities
            .iter()
            .position(|d| d.interface == entry.interface)
        {
            return Err(invalid(format!(
                "{at}.capabilities[{i}] declares {} again (first at capabilities[{j}]); \
                 declare each interface once",
                entry.interface
            )));
        }
        capabilities.push(entry);
    }
    Ok(Declaration {
        endpoint_id: endpoint_id.to_string(),
        product_id: product_id.to_string(),
        device_serial_number: dsn.to_string(),
        capabilities,
    })
}

fn check_capability(c: &Value, at: &str) -> Result<Declared, Refusal> {
    if !c.is_object() {
        return Err(invalid(format!("{at} is not an object")));
    }
    let kind = string(c, "type", at)?;
    if kind != "AlexaInterface" {
        return Err(invalid(format!(
            "{at}.type is `{kind}`; capabilities are of type \"AlexaInterface\""
        )));
    }
    let interface = string(c, "interface", at)?;
    let version = string(c, "version", at)?;
    if interface == "Alexa.Discovery" {
        return Err(invalid(format!(
            "{at} declares Alexa.Discovery, whose support is implicit: a device must not list it"
        )));
    }
    let Some(known) = implemented(interface) else {
        let names: Vec<&str> = IMPLEMENTED.iter().map(|i| i.interface).collect();
        return Err(invalid(format!(
            "{at}.interface `{interface}` is not an interface avs-sim implements ({})",
            names.join(", ")
        )));
    };
    if !known.versions.contains(&version) {
        return Err(invalid(format!(
            "{at}: {interface} version `{version}` is not one avs-sim implements ({})",
            known.versions.join(", ")
        )));
    }
    let configurations = match c.get("configurations") {
        None => None,
        Some(v) if !v.is_object() => {
            return Err(invalid(format!("{at}.configurations is not an object")));
        }
        Some(v) => {
            if !known
                .configurations
                .is_some_and(|from| version_at_least(version, from))
            {
                return Err(invalid(format!(
                    "{at}: {interface} {version} has no configurations"
                )));
            }
            if interface == "SpeechRecognizer" {
                super::wakeword::check_configurations(v)
                    .map_err(|e| invalid(format!("{at}.configurations.{e}")))?;
            }
            Some(v.clone())
        }
    };
    Ok(Declared {
        interface: interface.to_string(),
        version: version.to_string(),
        configurations,
    })
}

/// `MAJOR.MINOR` >= `MAJOR.MINOR`, both from [`IMPLEMENTED`]'s strings.
fn version_at_least(v: &str, from: &str) -> bool {
    let parse = |s: &str| -> (u32, u32) {
        let (a, b) = s.split_once('.').unwrap_or((s, "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    };
    parse(v) >= parse(from)
}

/// Check an event's `context` entries (their header and payload objects
/// were checked already): each interface that the device `declared` (when
/// it sent a Discovery; else one the stand-in implements, as for a device
/// on the console's capabilities), each entry once, in its documented
/// shape.
pub(super) fn check_context(
    context: &[Value],
    declared: Option<&Declaration>,
) -> Result<(), Refusal> {
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, entry) in context.iter().enumerate() {
        let at = format!("context[{i}]");
        let namespace = entry["header"]["namespace"].as_str().unwrap_or_default();
        let name = entry["header"]["name"].as_str().unwrap_or_default();
        if let Some(first) = seen.insert((namespace, name), i) {
            return Err(Refusal::invalid(format!(
                "{at} repeats {namespace}.{name} (first at context[{first}]); each state once"
            )));
        }
        let version = match declared {
            Some(d) => Some(d.version(namespace).ok_or_else(|| {
                Refusal::invalid(format!(
                    "{at} is {namespace}.{name}, but the device did not declare {namespace} \
                     in Alexa.Discovery.AddOrUpdateReport (it declared {})",
                    d.capabilities
                        .iter()
                        .map(|c| format!("{} {}", c.interface, c.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?),
            None => None,
        };
        let known = implemented(namespace).ok_or_else(|| {
            Refusal::invalid(format!(
                "{at} is {namespace}.{name}, an interface avs-sim does not implement"
            ))
        })?;
        if !known.context.contains(&name) {
            return Err(Refusal::invalid(format!(
                "{at}: {namespace} has no context entry named {name}{}",
                if known.context.is_empty() {
                    " (it has none)".to_string()
                } else {
                    format!(" (only {})", known.context.join(", "))
                }
            )));
        }
        check_entry(namespace, name, version, &entry["payload"], &at)?;
    }
    Ok(())
}

/// The payload of one context entry, as its interface version documents.
fn check_entry(
    namespace: &str,
    name: &str,
    version: Option<&str>,
    p: &Value,
    at: &str,
) -> Result<(), Refusal> {
    let bad = |what: String| Refusal::invalid(format!("{at} ({namespace}.{name}): {what}"));
    match (namespace, name) {
        ("SpeechSynthesizer", "SpeechState") => {
            if !p.get("token").is_some_and(Value::is_string) {
                return Err(bad("payload.token is missing or not a string".into()));
            }
            if p.get("offsetInMilliseconds")
                .and_then(Value::as_u64)
                .is_none()
            {
                return Err(bad(
                    "payload.offsetInMilliseconds is missing or not a whole number >= 0".into(),
                ));
            }
            let activity = p
                .get("playerActivity")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("payload.playerActivity is missing or not a string".into()))?;
            // INTERRUPTED came with 1.3; without a declaration, any version.
            let interrupted = version.is_none_or(|v| version_at_least(v, "1.3"));
            let ok = match activity {
                "PLAYING" | "FINISHED" => true,
                "INTERRUPTED" => interrupted,
                _ => false,
            };
            if !ok {
                return Err(bad(format!(
                    "payload.playerActivity `{activity}` is not one of {} for SpeechSynthesizer {}",
                    if interrupted {
                        "PLAYING, FINISHED, INTERRUPTED"
                    } else {
                        "PLAYING, FINISHED"
                    },
                    version.unwrap_or("(undeclared)")
                )));
            }
        }
        ("Speaker", "VolumeState") => {
            super::speaker::check_payload(at, p)
                .map_err(|r| bad(r.description.replacen(&format!("{at}: "), "", 1)))?;
        }
        ("AudioPlayer", "PlaybackState") => {
            if !p.get("token").is_some_and(Value::is_string) {
                return Err(bad("payload.token is missing or not a string".into()));
            }
            if p.get("offsetInMilliseconds")
                .and_then(Value::as_u64)
                .is_none()
            {
                return Err(bad(
                    "payload.offsetInMilliseconds is missing or not a whole number >= 0".into(),
                ));
            }
            let activity = p.get("playerActivity").and_then(Value::as_str);
            const ACTIVITIES: &[&str] = &[
                "IDLE",
                "PLAYING",
                "STOPPED",
                "PAUSED",
                "BUFFER_UNDERRUN",
                "FINISHED",
            ];
            if !activity.is_some_and(|a| ACTIVITIES.contains(&a)) {
                return Err(bad(format!(
                    "payload.playerActivity {activity:?} is not one of {}",
                    ACTIVITIES.join(", ")
                )));
            }
        }
        ("SpeechRecognizer", "RecognizerState")
            if !p.get("wakeword").is_some_and(Value::is_string) =>
        {
            return Err(bad("payload.wakeword is missing or not a string".into()));
        }
        ("Alerts", "AlertsState") => super::alerts::check_state(p).map_err(bad)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
