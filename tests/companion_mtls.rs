//! Mutual TLS on the device routes: with a device CA configured, a device
//! must present a certificate from that CA naming `<productId>:<dsn>`;
//! browsers need none.

use serde_json::json;
use support::companion::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_routes_need_a_certificate_naming_the_device() {
    let s = Setup::with_server_extra(&[], "device_ca_file = \"{ca}\"").await;
    let base = s.companion.base.clone();
    let body = json!({"productId": PRODUCT, "dsn": "0001"});
    let post = |client: reqwest::Client, path: &'static str, body: serde_json::Value| {
        let base = base.clone();
        async move {
            let r = client
                .post(format!("{base}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };

    // No certificate: refused, with words that say why.
    let (status, v) = post(s.env.client(), "/provision/regCode", body.clone()).await;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("client certificate")
    );

    // A certificate from the right CA for another device: refused.
    let wrong = s
        .env
        .client_builder()
        .identity(s.env.device_identity(&format!("{PRODUCT}:9999")))
        .build()
        .unwrap();
    let (status, _) = post(wrong.clone(), "/provision/regCode", body.clone()).await;
    assert_eq!(status, 401);

    // A certificate from another CA does not even get through the handshake.
    let other_ca = https::certs::LocalCa::new("other CA").unwrap();
    let pem = other_ca.client(&format!("{PRODUCT}:0001")).unwrap();
    let stranger = s
        .env
        .client_builder()
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", pem.cert, pem.key).as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    assert!(
        stranger
            .post(format!("{}/provision/regCode", s.companion.base))
            .json(&body)
            .send()
            .await
            .is_err()
    );

    // The right certificate: registered, and polling needs it too.
    let right = s
        .env
        .client_builder()
        .identity(s.env.device_identity(&format!("{PRODUCT}:0001")))
        .build()
        .unwrap();
    let (status, v) = post(right.clone(), "/provision/regCode", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    let poll = json!({"sessionId": v["sessionId"]});
    assert_eq!(
        post(wrong.clone(), "/provision/accessToken", poll.clone())
            .await
            .0,
        401
    );
    let (status, v) = post(right.clone(), "/provision/accessToken", poll.clone()).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("authorization_pending"))
    );

    // Revoking needs the device's certificate too: a stolen session id
    // alone cannot end (or probe) someone else's session.
    let (status, _) = post(s.env.client(), "/provision/revoke", poll.clone()).await;
    assert_eq!(status, 401);
    let (status, _) = post(wrong.clone(), "/provision/revoke", poll.clone()).await;
    assert_eq!(status, 401);
    let (status, v) = post(right.clone(), "/provision/revoke", poll.clone()).await;
    assert_eq!((status, v), (200, json!({})));
    let (status, v) = post(right, "/provision/accessToken", poll).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("access_denied")));

    // Browser routes work without a certificate.
    let (status, page, _) = s.browser().get(&format!("{}/", s.companion.base)).await;
    assert_eq!(status, 200);
    assert!(page.contains("Link your Alexa device"));
}
