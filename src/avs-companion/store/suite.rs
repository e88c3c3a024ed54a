//! The store test suite: every rule of [`Store`] that does not depend on
//! the backend, as plain functions on `&dyn Store` so the same checks run
//! on SQLite (the unit tests in `tests.rs`) and on a real PostgreSQL
//! (`tests/store_suite.rs`, with the `store-suite` feature). Each case
//! expects a fresh, empty store.

use super::*;

/// One case: its name and body.
pub type Case = (&'static str, fn(&dyn Store));

/// Every case, in the order they run.
pub const CASES: &[Case] = &[
    (
        "codes_are_unique_and_retired_by_linking",
        codes_are_unique_and_retired_by_linking,
    ),
    (
        "states_are_single_use_expire_and_stay_bound_to_their_browser",
        states_are_single_use_expire_and_stay_bound_to_their_browser,
    ),
    (
        "ending_a_session_forgets_its_tokens_and_states",
        ending_a_session_forgets_its_tokens_and_states,
    ),
    (
        "purge_drops_expired_states_but_keeps_linked_sessions",
        purge_drops_expired_states_but_keeps_linked_sessions,
    ),
    (
        "linking_a_new_registration_retires_the_older_sessions_of_that_device",
        linking_a_new_registration_retires_the_older_sessions_of_that_device,
    ),
    (
        "the_operator_lists_and_revokes_without_seeing_secrets",
        the_operator_lists_and_revokes_without_seeing_secrets,
    ),
    (
        "only_the_newest_login_states_of_a_session_are_kept",
        only_the_newest_login_states_of_a_session_are_kept,
    ),
    (
        "update_tokens_is_a_compare_and_swap_on_the_version",
        update_tokens_is_a_compare_and_swap_on_the_version,
    ),
    (
        "one_holder_leases_a_refresh_until_it_releases_or_the_lease_runs_out",
        one_holder_leases_a_refresh_until_it_releases_or_the_lease_runs_out,
    ),
    (
        "only_the_holder_renews_a_lease_and_a_renewed_lease_keeps_others_off",
        only_the_holder_renews_a_lease_and_a_renewed_lease_keeps_others_off,
    ),
    (
        "storing_refreshed_tokens_releases_the_lease",
        storing_refreshed_tokens_releases_the_lease,
    ),
    (
        "a_failed_refresh_holds_others_off_until_its_back_off",
        a_failed_refresh_holds_others_off_until_its_back_off,
    ),
    (
        "background_leases_take_due_sessions_once_soonest_first",
        background_leases_take_due_sessions_once_soonest_first,
    ),
    (
        "an_invalid_grant_after_the_version_moved_is_not_a_revocation",
        an_invalid_grant_after_the_version_moved_is_not_a_revocation,
    ),
    (
        "exactly_one_of_many_concurrent_leases_wins",
        exactly_one_of_many_concurrent_leases_wins,
    ),
    (
        "concurrent_background_leases_never_share_a_session",
        concurrent_background_leases_never_share_a_session,
    ),
];

/// Run every case, each on a store `fresh` makes; a failure names its case.
pub fn run_all<S: AsRef<dyn Store>>(mut fresh: impl FnMut(&str) -> S) {
    for (name, case) in CASES {
        let store = fresh(name);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(store.as_ref())));
        if let Err(e) = run {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("store suite case `{name}` failed: {why}");
        }
    }
}

/// A pending session `id` with registration code `code`.
pub fn session(id: &str, code: &str, expires: u64) -> Session {
    Session {
        id: Secret::new(id),
        reg_code: Some(code.into()),
        product_id: "p".into(),
        dsn: "d".into(),
        reg_expires_at: expires,
        status: Status::Pending,
        interval: 5,
        last_poll_at: None,
        tokens: None,
        version: 0,
    }
}

/// A login state `st` of session `sid`, bound to browser cookie `cookie-1`.
pub fn state(st: &str, sid: &str, expires: u64) -> LoginState {
    LoginState {
        state: Secret::new(st),
        session_id: Secret::new(sid),
        cookie: Secret::new("cookie-1"),
        verifier: Secret::new("verifier"),
        expires_at: expires,
    }
}

/// Tokens numbered `n` (`Atza|n`, `Atzr|n`).
pub fn tokens(n: u32) -> Tokens {
    Tokens {
        access: Secret::new(format!("Atza|{n}")),
        access_expires_at: 5000 + u64::from(n),
        refresh: Secret::new(format!("Atzr|{n}")),
    }
}

/// See the name.
pub fn codes_are_unique_and_retired_by_linking(s: &dyn Store) {
    assert!(s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap());
    assert!(!s.create_session(&session("s2", "AAAAAAAA", 100)).unwrap());
    assert!(s.link("s1", &tokens(1)).unwrap());
    assert!(s.session_by_code("AAAAAAAA").unwrap().is_none());
    assert!(
        !s.link("s1", &tokens(2)).unwrap(),
        "only a pending session links"
    );
    let got = s.session("s1").unwrap().unwrap();
    assert_eq!(got.status, Status::Linked);
    assert_eq!(got.tokens.unwrap().refresh.expose(), "Atzr|1");
    // The retired code can be handed out again.
    assert!(s.create_session(&session("s3", "AAAAAAAA", 100)).unwrap());
}

/// See the name.
pub fn states_are_single_use_expire_and_stay_bound_to_their_browser(s: &dyn Store) {
    s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap();
    s.add_state(&state("st", "s1", 50)).unwrap();
    assert!(matches!(
        s.take_state("st", None, 10).unwrap(),
        TakeState::WrongBrowser
    ));
    assert!(matches!(
        s.take_state("st", Some("cookie-2"), 10).unwrap(),
        TakeState::WrongBrowser
    ));
    assert!(matches!(
        s.take_state("st", Some("cookie-1"), 50).unwrap(),
        TakeState::Expired
    ));
    assert!(matches!(
        s.take_state("other", Some("cookie-1"), 10).unwrap(),
        TakeState::Unknown
    ));
    match s.take_state("st", Some("cookie-1"), 10).unwrap() {
        TakeState::Taken(l) => assert_eq!(l.verifier.expose(), "verifier"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.take_state("st", Some("cookie-1"), 10).unwrap(),
        TakeState::Unknown
    ));
}

/// See the name.
pub fn ending_a_session_forgets_its_tokens_and_states(s: &dyn Store) {
    s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap();
    s.add_state(&state("st", "s1", 50)).unwrap();
    s.link("s1", &tokens(1)).unwrap();
    assert!(s.update_tokens("s1", 1, &tokens(2)).unwrap());
    assert_eq!(
        s.session("s1")
            .unwrap()
            .unwrap()
            .tokens
            .unwrap()
            .access
            .expose(),
        "Atza|2"
    );
    s.end("s1", Status::Revoked).unwrap();
    let got = s.session("s1").unwrap().unwrap();
    assert_eq!(got.status, Status::Revoked);
    assert!(got.tokens.is_none());
    // Tokens are only replaced on a linked session.
    let v = s.session("s1").unwrap().unwrap().version;
    assert!(!s.update_tokens("s1", v, &tokens(3)).unwrap());
    assert!(s.session("s1").unwrap().unwrap().tokens.is_none());
}

/// See the name.
pub fn purge_drops_expired_states_but_keeps_linked_sessions(s: &dyn Store) {
    s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap();
    s.create_session(&Session {
        dsn: "other".into(),
        ..session("s2", "BBBBBBBB", 100)
    })
    .unwrap();
    s.add_state(&state("st", "s1", 50)).unwrap();
    s.link("s2", &tokens(1)).unwrap();
    assert_eq!(s.purge(60).unwrap(), 1, "the expired state");
    assert_eq!(s.pending_count(60).unwrap(), 1);
    assert_eq!(
        s.purge(100).unwrap(),
        1,
        "a pending session goes once it expires"
    );
    assert!(s.session("s1").unwrap().is_none());
    assert_eq!(s.pending_count(60).unwrap(), 0);
    let far = kit::clock::unix_now() + 10 * 24 * 3600;
    s.purge(far).unwrap();
    assert!(s.session("s2").unwrap().is_some(), "a linked session stays");
}

/// See the name.
pub fn linking_a_new_registration_retires_the_older_sessions_of_that_device(s: &dyn Store) {
    s.create_session(&session("old", "AAAAAAAA", 100)).unwrap();
    s.link("old", &tokens(1)).unwrap();
    s.create_session(&session("stale", "CCCCCCCC", 100))
        .unwrap();
    s.create_session(&Session {
        dsn: "someone-else".into(),
        ..session("other", "DDDDDDDD", 100)
    })
    .unwrap();
    s.create_session(&session("new", "BBBBBBBB", 100)).unwrap();
    assert_eq!(
        s.session("old").unwrap().unwrap().status,
        Status::Linked,
        "registering alone retires nothing"
    );
    s.link("new", &tokens(2)).unwrap();
    for id in ["old", "stale"] {
        let got = s.session(id).unwrap().unwrap();
        assert_eq!(got.status, Status::Revoked, "{id}");
        assert!(got.tokens.is_none(), "{id}: its refresh token is gone");
    }
    assert_eq!(s.session("new").unwrap().unwrap().status, Status::Linked);
    assert_eq!(s.session("other").unwrap().unwrap().status, Status::Pending);
}

/// See the name.
pub fn the_operator_lists_and_revokes_without_seeing_secrets(s: &dyn Store) {
    s.create_session(&session("sess-1", "AAAAAAAA", 100))
        .unwrap();
    s.link("sess-1", &tokens(1)).unwrap();
    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].short_id, short_id("sess-1"));
    assert_eq!(list[0].short_id.len(), 10);
    assert!(!format!("{list:?}").contains("sess-1"));
    assert!(list[0].created_at > 0);
    let ids = s.ids_by_short_id(&list[0].short_id[..4]).unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].expose(), "sess-1");
    assert_eq!(s.revoke_device("p", "nope").unwrap(), 0);
    assert_eq!(s.revoke_device("p", "d").unwrap(), 1);
    let got = s.session("sess-1").unwrap().unwrap();
    assert_eq!(got.status, Status::Revoked);
    assert!(got.tokens.is_none());
}

/// See the name.
pub fn only_the_newest_login_states_of_a_session_are_kept(s: &dyn Store) {
    s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap();
    for n in 0..10 {
        s.add_state(&state(&format!("st{n}"), "s1", 50)).unwrap();
    }
    assert!(matches!(
        s.take_state("st0", Some("cookie-1"), 10).unwrap(),
        TakeState::Unknown
    ));
    assert!(matches!(
        s.take_state("st9", Some("cookie-1"), 10).unwrap(),
        TakeState::Taken(_)
    ));
}

fn lease(token: &str, now: u64, until: u64) -> Lease {
    Lease {
        token: token.into(),
        now,
        until,
    }
}

/// Linked session `id` of its own device, holding `tokens(n)` (its
/// access token expires at 5000 + n).
fn linked(s: &dyn Store, id: &str, n: u32) {
    let code = format!("{:A>8}", n.to_string().replace(['0', '1'], "C"));
    let mut new = session(id, &code, u64::MAX / 4);
    new.dsn = format!("dsn-{id}");
    assert!(s.create_session(&new).unwrap(), "{id}");
    assert!(s.link(id, &tokens(n)).unwrap(), "{id}");
}

/// See the name.
pub fn update_tokens_is_a_compare_and_swap_on_the_version(s: &dyn Store) {
    linked(s, "s1", 1);
    let v = s.session("s1").unwrap().unwrap().version;
    assert!(s.update_tokens("s1", v, &tokens(2)).unwrap());
    assert_eq!(s.session("s1").unwrap().unwrap().version, v + 1);
    assert!(
        !s.update_tokens("s1", v, &tokens(3)).unwrap(),
        "a stale version writes nothing"
    );
    let got = s.session("s1").unwrap().unwrap();
    assert_eq!(got.tokens.unwrap().refresh.expose(), "Atzr|2");
    assert!(s.update_tokens("s1", v + 1, &tokens(4)).unwrap());
    assert!(!s.update_tokens("nope", 0, &tokens(4)).unwrap());
}

/// See the name.
pub fn one_holder_leases_a_refresh_until_it_releases_or_the_lease_runs_out(s: &dyn Store) {
    linked(s, "s1", 1);
    s.create_session(&session("pending", "PPPPPPPP", u64::MAX / 4))
        .unwrap();
    assert!(
        s.lease_refresh("pending", &lease("a", 100, 200))
            .unwrap()
            .is_none()
    );
    let got = s.lease_refresh("s1", &lease("a", 100, 200)).unwrap();
    assert_eq!(
        got.expect("a free lease is taken")
            .tokens
            .unwrap()
            .refresh
            .expose(),
        "Atzr|1",
        "the session is read under the lease"
    );
    assert!(
        s.lease_refresh("s1", &lease("b", 150, 250))
            .unwrap()
            .is_none()
    );
    assert!(
        s.lease_refresh("s1", &lease("a", 160, 200))
            .unwrap()
            .is_some(),
        "the holder may take it again"
    );
    s.release_refresh("s1", "b", None).unwrap();
    assert!(
        s.lease_refresh("s1", &lease("b", 170, 250))
            .unwrap()
            .is_none(),
        "only the holder releases"
    );
    s.release_refresh("s1", "a", None).unwrap();
    assert!(
        s.lease_refresh("s1", &lease("b", 170, 250))
            .unwrap()
            .is_some()
    );
    assert!(
        s.lease_refresh("s1", &lease("c", 249, 300))
            .unwrap()
            .is_none()
    );
    assert!(
        s.lease_refresh("s1", &lease("c", 250, 300))
            .unwrap()
            .is_some(),
        "an expired lease (a dead holder's) is taken over"
    );
}

/// See the name.
pub fn only_the_holder_renews_a_lease_and_a_renewed_lease_keeps_others_off(s: &dyn Store) {
    linked(s, "s1", 1);
    assert!(
        s.lease_refresh("s1", &lease("a", 100, 110))
            .unwrap()
            .is_some()
    );
    assert!(
        !s.renew_refresh("s1", "b", 500).unwrap(),
        "b holds no lease"
    );
    assert!(s.renew_refresh("s1", "a", 130).unwrap());
    assert!(
        s.lease_refresh("s1", &lease("b", 120, 200))
            .unwrap()
            .is_none(),
        "the renewed lease still holds at 120"
    );
    assert!(
        s.lease_refresh("s1", &lease("b", 130, 200))
            .unwrap()
            .is_some(),
        "and runs out at 130"
    );
    assert!(
        !s.renew_refresh("s1", "a", 300).unwrap(),
        "a lost its lease to b: it must not call LWA"
    );
    s.release_refresh("s1", "b", None).unwrap();
    assert!(
        !s.renew_refresh("s1", "b", 300).unwrap(),
        "a released lease is gone"
    );
    assert!(!s.renew_refresh("nope", "a", 300).unwrap());
}

/// See the name.
pub fn storing_refreshed_tokens_releases_the_lease(s: &dyn Store) {
    linked(s, "s1", 1);
    let got = s
        .lease_refresh("s1", &lease("a", 100, 200))
        .unwrap()
        .unwrap();
    assert!(s.update_tokens("s1", got.version, &tokens(2)).unwrap());
    assert!(
        s.lease_refresh("s1", &lease("b", 101, 200))
            .unwrap()
            .is_some()
    );
}

/// See the name.
pub fn a_failed_refresh_holds_others_off_until_its_back_off(s: &dyn Store) {
    linked(s, "s1", 1);
    s.lease_refresh("s1", &lease("a", 100, 200))
        .unwrap()
        .unwrap();
    s.release_refresh("s1", "a", Some(130)).unwrap();
    assert!(
        s.lease_refresh("s1", &lease("b", 129, 200))
            .unwrap()
            .is_none()
    );
    assert!(
        s.lease_refresh("s1", &lease("b", 130, 200))
            .unwrap()
            .is_some()
    );
}

/// See the name.
pub fn background_leases_take_due_sessions_once_soonest_first(s: &dyn Store) {
    for n in [3, 1, 2] {
        linked(s, &format!("s{n}"), n);
    }
    s.create_session(&session("pending", "PPPPPPPP", u64::MAX / 4))
        .unwrap();
    let ids =
        |v: Vec<Session>| -> Vec<String> { v.iter().map(|s| s.id.expose().to_string()).collect() };
    let got = s.lease_due(5002, &lease("a", 100, 200), 10).unwrap();
    assert_eq!(ids(got), ["s1", "s2"], "due by 5002, soonest first");
    assert!(
        s.lease_due(5002, &lease("b", 100, 200), 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        s.lease_refresh("s1", &lease("b", 100, 200))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        ids(s.lease_due(9999, &lease("c", 100, 200), 1).unwrap()),
        ["s3"]
    );
    assert!(
        s.lease_due(9999, &lease("d", 199, 300), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(s.lease_due(9999, &lease("d", 200, 300), 10).unwrap()),
        ["s1", "s2", "s3"],
        "expired leases come back"
    );
}

/// See the name.
pub fn an_invalid_grant_after_the_version_moved_is_not_a_revocation(s: &dyn Store) {
    linked(s, "s1", 1);
    let v = s.session("s1").unwrap().unwrap().version;
    assert!(s.update_tokens("s1", v, &tokens(2)).unwrap());
    assert!(!s.revoke_if_unchanged("s1", v).unwrap());
    let got = s.session("s1").unwrap().unwrap();
    assert_eq!(got.status, Status::Linked);
    assert!(s.revoke_if_unchanged("s1", got.version).unwrap());
    let got = s.session("s1").unwrap().unwrap();
    assert_eq!(got.status, Status::Revoked);
    assert!(got.tokens.is_none());
}

/// See the name.
pub fn exactly_one_of_many_concurrent_leases_wins(s: &dyn Store) {
    linked(s, "s1", 1);
    let won: usize = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|n| {
                scope.spawn(move || {
                    s.lease_refresh("s1", &lease(&format!("r{n}"), 100, 200))
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| usize::from(r.join().unwrap()))
            .sum()
    });
    assert_eq!(won, 1);
}

/// See the name.
pub fn concurrent_background_leases_never_share_a_session(s: &dyn Store) {
    for n in 1..=12 {
        linked(s, &format!("s{n}"), n);
    }
    let mut got: Vec<String> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|n| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let batch = s
                            .lease_due(9999, &lease(&format!("r{n}"), 100, 200), 2)
                            .unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.into_iter().map(|s| s.id.expose().to_string()));
                    }
                })
            })
            .collect();
        racers.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    got.sort();
    let mut want: Vec<String> = (1..=12).map(|n| format!("s{n}")).collect();
    want.sort();
    assert_eq!(got, want, "every due session leased exactly once");
}
