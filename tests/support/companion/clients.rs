//! Device- and browser-like HTTPS clients and small HTML helpers.

use serde_json::{Value, json};

use super::PRODUCT;

/// The device side of the contract.
pub struct Device {
    /// The HTTPS client, trusting the test CA.
    pub client: reqwest::Client,
    /// The companion's base URL.
    pub base: String,
}

impl Device {
    /// POST `body` as JSON to `path`; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, v)
    }

    /// `POST /provision/regCode` for `product` and `dsn`.
    pub async fn register(&self, product: &str, dsn: &str) -> (u16, Value) {
        self.post(
            "/provision/regCode",
            json!({"productId": product, "dsn": dsn}),
        )
        .await
    }

    /// Register `PRODUCT` and return (regCode, sessionId, loginUrl).
    pub async fn register_ok(&self, dsn: &str) -> (String, String, String) {
        let (status, v) = self.register(PRODUCT, dsn).await;
        assert_eq!(status, 200, "{v}");
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        (s("regCode"), s("sessionId"), s("loginUrl"))
    }

    /// `POST /provision/accessToken` for `session`.
    pub async fn poll(&self, session: &str) -> (u16, Value) {
        self.post("/provision/accessToken", json!({ "sessionId": session }))
            .await
    }

    /// The `error` code of a poll that must fail.
    pub async fn poll_error(&self, session: &str) -> String {
        let (status, v) = self.poll(session).await;
        assert_eq!(status, 400, "{v}");
        v["error"].as_str().unwrap().to_string()
    }
}

/// A browser: keeps cookies, follows nothing on its own (each step is visible).
pub struct Browser {
    /// The HTTPS client, with a cookie store.
    pub client: reqwest::Client,
}

impl Browser {
    /// GET `url`: status, body and headers, without following redirects.
    pub async fn get(&self, url: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let r = self.client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.text().await.unwrap(), headers)
    }

    /// Open the device page, press "Login with Amazon", and return the
    /// LWA consent URL it redirects to.
    pub async fn open_device_page(&self, login_url: &str) -> String {
        let (status, page, _) = self.get(login_url).await;
        assert_eq!(status, 200, "{page}");
        self.press_login(&press_url(login_url, &page)).await
    }

    /// Press "Login with Amazon" (its URL from [`press_url`]): the
    /// companion sets the login cookie and redirects to LWA's consent page.
    pub async fn press_login(&self, press: &str) -> String {
        let r = self.client.get(press).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        assert_eq!(status, 302, "{body}");
        location.expect("a Location header")
    }

    /// On the stand-in's consent page, click Allow or Deny; returns where
    /// the stand-in redirects (the companion's /authresponse URL).
    pub async fn consent(&self, consent_url: &str, allow: bool) -> String {
        let (status, page, _) = self.get(consent_url).await;
        assert_eq!(status, 200, "{page}");
        let form_action =
            consent_url.split("/ap/oa").next().unwrap().to_string() + "/ap/oa/consent";
        let request = attr_value(&page, "name=\"request\" value=\"");
        let decision = if allow { "allow" } else { "deny" };
        let r = self
            .client
            .post(form_action)
            .form(&[("request", request.as_str()), ("decision", decision)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 302);
        r.headers()["location"].to_str().unwrap().to_string()
    }
}

/// The absolute URL of the device page's "Login with Amazon" button.
pub fn press_url(page_url: &str, page: &str) -> String {
    url::Url::parse(page_url)
        .unwrap()
        .join(&login_href(page))
        .unwrap()
        .to_string()
}

/// The `href` of the page's login link, unescaped.
pub fn login_href(page: &str) -> String {
    attr_value(page, "id=\"login\" href=\"")
}

/// The attribute value that follows `marker`, HTML-unescaped.
pub fn attr_value(page: &str, marker: &str) -> String {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in page:\n{page}"))
        + marker.len();
    let end = start + page[start..].find('"').unwrap();
    page[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The query parameters of `url`.
pub fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}
