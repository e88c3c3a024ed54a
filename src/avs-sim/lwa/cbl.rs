//! Code-based linking at the LWA stand-in: the code pair
//! (`POST /auth/o2/create/codepair`), the user's page where the code is
//! entered (with Allow and Deny), and the device-code grant at the token
//! endpoint, as LWA's "other platforms" pages describe them. Where those
//! pages are silent the stand-in follows RFC 8628 (the OAuth device flow
//! they say they implement): `access_denied` after Deny, `expired_token`
//! once the pair's lifetime is over, `slow_down` for a poll sooner than
//! `interval` after the previous one. Pure logic; `cbl_routes.rs` parses
//! and formats.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use super::state::{LwaError, parse_scope_data, random};

/// Refresh-token families of code-pair grants start with this, so a
/// refresh can tell which client a grant belongs to.
pub const FAMILY_PREFIX: &str = "cbl:";

/// The most code pairs kept at once: a client asking for pairs in a loop
/// cannot grow the stand-in without end (the oldest go first).
const MAX_PAIRS: usize = 256;

/// The most poll times kept per pair for `/_sim/cbl`.
const MAX_POLLS: usize = 64;

/// User codes use letters and digits that cannot be mistaken for each
/// other when read off a small screen.
const USER_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// How code-based linking is set up at the stand-in.
#[derive(Debug, Clone)]
pub struct CblRules {
    /// The client id of the "Other devices and platforms" security
    /// profile; `None` means no client may use code-based linking.
    pub client_id: Option<String>,
    /// Lifetime of a code pair (`expires_in`).
    pub lifetime: Duration,
    /// Seconds between polls the device is told (`interval`).
    pub interval: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Waiting,
    Allowed,
    Denied,
    Used,
}

#[derive(Debug)]
struct Pair {
    device_code: String,
    user_code: String,
    product_id: String,
    dsn: String,
    /// Sim-clock seconds.
    expires_at: u64,
    answer: Answer,
    last_poll: Option<Instant>,
    /// Milliseconds since the pair was made, of every poll (capped).
    polls: Vec<u64>,
    made: Instant,
}

/// Counters of code-based linking, under `/_sim/counters` as `cbl`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CblCounters {
    /// Code pairs handed out.
    pub codepairs: u64,
    /// Device-code polls received (any answer).
    pub polls: u64,
    /// Polls that came sooner than `interval` after the previous one.
    pub early_polls: u64,
    /// `slow_down` answers forced by `/_sim/cbl/slow_down`.
    pub forced_slow_downs: u64,
    /// Codes the user allowed on the page.
    pub allowed: u64,
    /// Codes the user denied on the page.
    pub denied: u64,
    /// Successful device-code grants.
    pub grants: u64,
}

/// The code pairs and their counters.
#[derive(Debug)]
pub struct Cbl {
    /// Setup.
    pub rules: CblRules,
    pairs: Vec<Pair>,
    /// Counters for tests.
    pub counters: CblCounters,
    /// Answer the next this-many polls `slow_down` whatever their timing.
    pub slow_down_next: u32,
}

impl Cbl {
    /// No pairs yet.
    pub fn new(rules: CblRules) -> Self {
        Self {
            rules,
            pairs: Vec::new(),
            counters: CblCounters::default(),
            slow_down_next: 0,
        }
    }

    /// `POST /auth/o2/create/codepair`. `web_client` is the stand-in's
    /// other (web) client id, refused here with `unauthorized_client`;
    /// `verification_uri` is where the user enters the code.
    pub fn create(
        &mut self,
        form: &HashMap<String, String>,
        web_client: &str,
        verification_uri: &str,
        now: u64,
    ) -> Result<Value, LwaError> {
        let client = form.get("client_id").map(String::as_str).unwrap_or("");
        if client.is_empty() {
            return Err(err(400, "invalid_request", "missing client_id"));
        }
        if self.rules.client_id.as_deref() != Some(client) {
            return Err(if client == web_client {
                err(
                    400,
                    "unauthorized_client",
                    "this client is not enabled for code-based linking (use a security \
                     profile of type Other devices and platforms)",
                )
            } else {
                err(401, "invalid_client", "unknown client_id")
            });
        }
        if form.get("response_type").map(String::as_str) != Some("device_code") {
            return Err(err(
                400,
                "unsupported_response_type",
                "response_type must be device_code",
            ));
        }
        if form.get("scope").map(String::as_str) != Some("alexa:all") {
            return Err(err(400, "invalid_scope", "scope must be alexa:all"));
        }
        let (product_id, dsn) = parse_scope_data(form.get("scope_data").map(String::as_str))
            .map_err(|d| err(400, "invalid_request", &d))?;
        self.pairs
            .retain(|p| p.expires_at + self.rules.lifetime.as_secs() > now);
        if self.pairs.len() >= MAX_PAIRS {
            self.pairs.remove(0);
        }
        let pair = Pair {
            device_code: random(24),
            user_code: user_code(),
            product_id,
            dsn,
            expires_at: now + self.rules.lifetime.as_secs(),
            answer: Answer::Waiting,
            last_poll: None,
            polls: Vec::new(),
            made: Instant::now(),
        };
        self.counters.codepairs += 1;
        let out = json!({
            "device_code": pair.device_code,
            "user_code": pair.user_code,
            "verification_uri": verification_uri,
            "expires_in": self.rules.lifetime.as_secs(),
            "interval": self.rules.interval,
        });
        self.pairs.push(pair);
        Ok(out)
    }

    /// The product and serial a still-open `user_code` is for, as typed by
    /// a person (any case, spaces and dashes ignored).
    pub fn find(&self, typed: &str, now: u64) -> Option<(String, String, String)> {
        let code = normalize(typed);
        self.pairs
            .iter()
            .find(|p| p.user_code == code && p.answer == Answer::Waiting && now < p.expires_at)
            .map(|p| (p.user_code.clone(), p.product_id.clone(), p.dsn.clone()))
    }

    /// The user's answer on the page; false if the code is not open.
    pub fn decide(&mut self, user_code: &str, allow: bool, now: u64) -> bool {
        let code = normalize(user_code);
        let Some(p) = self
            .pairs
            .iter_mut()
            .find(|p| p.user_code == code && p.answer == Answer::Waiting && now < p.expires_at)
        else {
            return false;
        };
        if allow {
            p.answer = Answer::Allowed;
            self.counters.allowed += 1;
        } else {
            p.answer = Answer::Denied;
            self.counters.denied += 1;
        }
        true
    }

    /// A device-code poll at the token endpoint. `Ok((family, grant))`
    /// when the user allowed: the caller issues the tokens.
    pub fn poll(
        &mut self,
        form: &HashMap<String, String>,
        now: u64,
    ) -> Result<(String, String), LwaError> {
        if let Some(client) = form.get("client_id")
            && self.rules.client_id.as_deref() != Some(client.as_str())
        {
            return Err(err(
                400,
                "unauthorized_client",
                "this client is not enabled for code-based linking",
            ));
        }
        let field = |k: &str| {
            form.get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(400, "invalid_request", &format!("missing {k}")))
        };
        let device_code = field("device_code")?;
        let user_code = field("user_code")?;
        self.counters.polls += 1;
        let Some(p) = self
            .pairs
            .iter_mut()
            .find(|p| &p.device_code == device_code)
        else {
            return Err(err(400, "invalid_grant", "unknown device_code"));
        };
        if p.user_code != *user_code {
            return Err(err(
                400,
                "invalid_grant",
                "user_code does not belong to this device_code",
            ));
        }
        let at = Instant::now();
        if p.polls.len() < MAX_POLLS {
            p.polls
                .push(u64::try_from(at.duration_since(p.made).as_millis()).unwrap_or(u64::MAX));
        }
        let early = p
            .last_poll
            .is_some_and(|last| at.duration_since(last) < Duration::from_secs(self.rules.interval));
        p.last_poll = Some(at);
        match p.answer {
            Answer::Used => return Err(err(400, "invalid_grant", "device_code already used")),
            Answer::Denied => {
                return Err(err(400, "access_denied", "the user denied the request"));
            }
            _ if now >= p.expires_at => {
                return Err(err(400, "expired_token", "the code pair has expired"));
            }
            _ => {}
        }
        if early {
            self.counters.early_polls += 1;
            return Err(err(400, "slow_down", "polled sooner than interval"));
        }
        if self.slow_down_next > 0 {
            self.slow_down_next -= 1;
            self.counters.forced_slow_downs += 1;
            return Err(err(400, "slow_down", "poll less often (forced by avs-sim)"));
        }
        if p.answer == Answer::Waiting {
            return Err(err(
                400,
                "authorization_pending",
                "the user has not entered the code yet",
            ));
        }
        p.answer = Answer::Used;
        self.counters.grants += 1;
        Ok((format!("{FAMILY_PREFIX}{}", p.device_code), random(12)))
    }

    /// What `/_sim/cbl` shows: counters and each pair's poll times.
    pub fn report(&self) -> Value {
        let pairs: Vec<Value> = self
            .pairs
            .iter()
            .map(|p| {
                json!({
                    "user_code": p.user_code,
                    "answer": format!("{:?}", p.answer).to_lowercase(),
                    "poll_ms": p.polls,
                })
            })
            .collect();
        json!({ "counters": self.counters, "interval": self.rules.interval, "pairs": pairs })
    }
}

fn err(status: u16, error: &'static str, description: &str) -> LwaError {
    LwaError {
        status,
        error,
        description: description.to_string(),
    }
}

fn user_code() -> String {
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())]))
        .collect()
}

fn normalize(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbl(interval: u64) -> Cbl {
        Cbl::new(CblRules {
            client_id: Some("cbl-client".into()),
            lifetime: Duration::from_secs(600),
            interval,
        })
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SCOPE_DATA: &str =
        r#"{"alexa:all":{"productID":"p","productInstanceAttributes":{"deviceSerialNumber":"d"}}}"#;

    fn pair(c: &mut Cbl) -> (String, String) {
        let v = c
            .create(
                &form(&[
                    ("response_type", "device_code"),
                    ("client_id", "cbl-client"),
                    ("scope", "alexa:all"),
                    ("scope_data", SCOPE_DATA),
                ]),
                "web",
                "https://x/code",
                1000,
            )
            .unwrap();
        (
            v["device_code"].as_str().unwrap().to_string(),
            v["user_code"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn codepair_refuses_what_lwa_refuses() {
        let mut c = cbl(0);
        let base = [
            ("response_type", "device_code"),
            ("client_id", "cbl-client"),
            ("scope", "alexa:all"),
            ("scope_data", SCOPE_DATA),
        ];
        let with = |k: &str, v: &str| {
            let mut f = form(&base);
            f.insert(k.into(), v.into());
            f
        };
        let code = |c: &mut Cbl, f| c.create(&f, "web", "u", 1000).unwrap_err().error;
        assert_eq!(
            code(&mut c, with("client_id", "web")),
            "unauthorized_client"
        );
        assert_eq!(code(&mut c, with("client_id", "nobody")), "invalid_client");
        assert_eq!(
            code(&mut c, with("response_type", "code")),
            "unsupported_response_type"
        );
        assert_eq!(code(&mut c, with("scope", "profile")), "invalid_scope");
        assert_eq!(code(&mut c, with("scope_data", "{}")), "invalid_request");
        assert_eq!(c.counters.codepairs, 0);
    }

    #[test]
    fn poll_goes_pending_then_tokens_then_invalid_grant() {
        let mut c = cbl(0);
        let (dc, uc) = pair(&mut c);
        let f = form(&[("device_code", &dc), ("user_code", &uc)]);
        assert_eq!(c.poll(&f, 1001).unwrap_err().error, "authorization_pending");
        assert!(c.find(&uc.to_lowercase(), 1001).is_some());
        assert!(c.decide(&uc, true, 1001));
        let (family, _) = c.poll(&f, 1002).unwrap();
        assert!(family.starts_with(FAMILY_PREFIX));
        assert_eq!(c.poll(&f, 1003).unwrap_err().error, "invalid_grant");
        let other = form(&[("device_code", "nope"), ("user_code", &uc)]);
        assert_eq!(c.poll(&other, 1003).unwrap_err().error, "invalid_grant");
    }

    #[test]
    fn denied_expired_and_early_polls() {
        let mut c = cbl(0);
        let (dc, uc) = pair(&mut c);
        let f = form(&[("device_code", &dc), ("user_code", &uc)]);
        assert!(c.decide(&uc, false, 1001));
        assert_eq!(c.poll(&f, 1001).unwrap_err().error, "access_denied");
        let (dc, uc) = pair(&mut c);
        let f = form(&[("device_code", &dc), ("user_code", &uc)]);
        assert_eq!(c.poll(&f, 1600).unwrap_err().error, "expired_token");
        assert!(!c.decide(&uc, true, 1600));
        let mut slow = cbl(60);
        let (dc, uc) = pair(&mut slow);
        let f = form(&[("device_code", &dc), ("user_code", &uc)]);
        assert_eq!(
            slow.poll(&f, 1001).unwrap_err().error,
            "authorization_pending"
        );
        assert_eq!(slow.poll(&f, 1001).unwrap_err().error, "slow_down");
        assert_eq!(slow.counters.early_polls, 1);
    }
}
