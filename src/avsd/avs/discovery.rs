//! `Alexa.Discovery.AddOrUpdateReport`: how current AVS learns what the
//! device implements (it replaced the Capabilities API). Sent after every
//! connect, since avsd keeps no record of what it reported.

use serde_json::{Value, json};

use super::connection::Identity;
use kit::secret::Secret;

/// One entry of the endpoint's `capabilities`: an AVS interface the device
/// implements. Each capability agent declares its own (`crate::agents`).
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    /// The interface, e.g. `SpeechSynthesizer`.
    pub interface: String,
    /// The interface version implemented, `MAJOR.MINOR`.
    pub version: String,
    /// The interface's `configurations` object, for interfaces that have one.
    pub configurations: Option<Value>,
}

impl Capability {
    /// An interface without configuration.
    pub fn new(interface: &str, version: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            version: version.to_owned(),
            configurations: None,
        }
    }

    /// The capability object of the report.
    pub fn to_json(&self) -> Value {
        let mut entry = json!({
            "type": "AlexaInterface",
            "interface": self.interface,
            "version": self.version,
        });
        if let (Some(config), Some(map)) = (&self.configurations, entry.as_object_mut()) {
            map.insert("configurations".to_owned(), config.clone());
        }
        entry
    }
}

/// The event's metadata JSON. The endpoint id joins product and serial,
/// which identifies this device instance as LWA's `scope_data` does.
pub fn add_or_update_report(identity: &Identity, token: &Secret) -> String {
    let capabilities: Vec<Value> = identity
        .capabilities
        .iter()
        .map(Capability::to_json)
        .collect();
    let event = json!({
        "event": {
            "header": {
                "namespace": "Alexa.Discovery",
                "name": "AddOrUpdateReport",
                "payloadVersion": "3",
                "messageId": uuid::Uuid::new_v4().to_string(),
                "eventCorrelationToken": uuid::Uuid::new_v4().to_string(),
            },
            "payload": {
                "scope": {"type": "BearerToken", "token": token.expose()},
                "endpoints": [{
                    "endpointId": format!("{}::{}", identity.product_id, identity.dsn),
                    "registration": {
                        "productId": identity.product_id,
                        "deviceSerialNumber": identity.dsn,
                    },
                    "manufacturerName": "avsd",
                    "description": "avsd, an Alexa Voice Service client for Raspberry Pi",
                    "friendlyName": "",
                    "displayCategories": ["ALEXA_VOICE_ENABLED"],
                    "capabilities": capabilities,
                }],
            },
        }
    });
    event.to_string()
}
