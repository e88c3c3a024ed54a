//! The sign-ins that linked a device lately, so that reloading the
//! "Device linked" page (the browser asks for `/authresponse` again, with a
//! `state` already spent) says the device is linked instead of "Sign-in
//! link already used … press Login with Amazon again". Only the browser
//! that signed in (the same login cookie) is told; nothing is exchanged
//! again. Bounded, in memory: after a restart a reload gets the old answer.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many linked sign-ins are remembered at most.
const CAP: usize = 256;

struct Entry {
    state: [u8; 32],
    cookie: String,
    product: String,
    dsn: String,
    until: u64,
}

/// Recently linked sign-ins: state → device, for the browser holding the cookie.
#[derive(Default)]
pub struct RecentLinks {
    entries: Mutex<VecDeque<Entry>>,
}

fn digest(state: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, state.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl RecentLinks {
    /// Remember that `state`, signed in with `cookie`, linked this device
    /// until `until`.
    pub fn remember(&self, state: &str, cookie: &str, product: &str, dsn: &str, until: u64) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= CAP {
            e.pop_front();
        }
        e.push_back(Entry {
            state: digest(state),
            cookie: cookie.to_string(),
            product: product.to_string(),
            dsn: dsn.to_string(),
            until,
        });
    }

    /// The device `state` linked, if this browser (`cookie`) signed in
    /// with it and it is still remembered at `now`.
    pub fn find(&self, state: &str, cookie: Option<&str>, now: u64) -> Option<(String, String)> {
        let cookie = cookie?;
        let key = digest(state);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|x| x.until > now);
        e.iter()
            .find(|x| {
                https::ct_eq(&x.state, &key) && https::ct_eq(x.cookie.as_bytes(), cookie.as_bytes())
            })
            .map(|x| (x.product.clone(), x.dsn.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_browser_is_told_and_only_for_a_while() {
        let r = RecentLinks::default();
        r.remember("st", "c1", "p", "d", 100);
        assert_eq!(r.find("st", Some("c1"), 50), Some(("p".into(), "d".into())));
        assert_eq!(r.find("st", Some("c2"), 50), None);
        assert_eq!(r.find("st", None, 50), None);
        assert_eq!(r.find("other", Some("c1"), 50), None);
        assert_eq!(r.find("st", Some("c1"), 100), None);
    }

    #[test]
    fn it_holds_a_bounded_number() {
        let r = RecentLinks::default();
        for i in 0..CAP + 10 {
            r.remember(&i.to_string(), "c", "p", "d", 100);
        }
        assert_eq!(r.entries.lock().unwrap().len(), CAP);
        assert_eq!(r.find("0", Some("c"), 1), None);
        assert!(r.find(&(CAP + 9).to_string(), Some("c"), 1).is_some());
    }
}
