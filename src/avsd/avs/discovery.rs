//! `Alexa.Discovery.AddOrUpdateReport`: how current AVS learns what the
//! device implements (it replaced the Capabilities API). Sent after every
//! connect, since avsd keeps no record of what it reported.

use serde_json::{Value, json};

use super::connection::Identity;
use kit::secret::Secret;

/// The event's metadata JSON. The endpoint id joins product and serial,
/// which identifies this device instance as LWA's `scope_data` does.
pub fn add_or_update_report(identity: &Identity, token: &Secret) -> String {
    let capabilities: Vec<Value> = identity
        .capabilities
        .iter()
        .map(|(interface, version)| {
            json!({"type": "AlexaInterface", "interface": interface, "version": version})
        })
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
