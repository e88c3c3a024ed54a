use super::*;

fn session(id: &str, code: &str, expires: u64) -> Session {
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
    }
}

fn state(st: &str, sid: &str, expires: u64) -> LoginState {
    LoginState {
        state: Secret::new(st),
        session_id: Secret::new(sid),
        cookie: Secret::new("cookie-1"),
        verifier: Secret::new("verifier"),
        expires_at: expires,
    }
}

fn tokens(n: u32) -> Tokens {
    Tokens {
        access: Secret::new(format!("Atza|{n}")),
        access_expires_at: 5000 + u64::from(n),
        refresh: Secret::new(format!("Atzr|{n}")),
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db/companion.sqlite3")).unwrap();
    (dir, store)
}

#[test]
fn codes_are_unique_and_retired_by_linking() {
    let (_d, s) = open();
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

#[test]
fn states_are_single_use_expire_and_stay_bound_to_their_browser() {
    let (_d, s) = open();
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

#[test]
fn ending_a_session_forgets_its_tokens_and_states() {
    let (_d, s) = open();
    s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap();
    s.add_state(&state("st", "s1", 50)).unwrap();
    s.link("s1", &tokens(1)).unwrap();
    s.update_tokens("s1", &tokens(2)).unwrap();
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
    s.update_tokens("s1", &tokens(3)).unwrap();
    assert!(s.session("s1").unwrap().unwrap().tokens.is_none());
}

#[test]
fn data_survives_reopening_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/companion.sqlite3");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_session(&session("s1", "AAAAAAAA", 100)).unwrap();
        s.link("s1", &tokens(1)).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.session("s1").unwrap().unwrap().status, Status::Linked);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

#[test]
fn purge_drops_expired_states_but_keeps_linked_sessions() {
    let (_d, s) = open();
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

#[test]
fn linking_a_new_registration_retires_the_older_sessions_of_that_device() {
    let (_d, s) = open();
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

#[test]
fn the_operator_lists_and_revokes_without_seeing_secrets() {
    let (_d, s) = open();
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

#[test]
fn only_the_newest_login_states_of_a_session_are_kept() {
    let (_d, s) = open();
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

#[test]
fn a_database_from_before_created_at_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, reg_code TEXT UNIQUE, product_id TEXT NOT NULL,
             dsn TEXT NOT NULL, reg_expires_at INTEGER NOT NULL, status TEXT NOT NULL,
             interval INTEGER NOT NULL, last_poll_at INTEGER, access_token TEXT,
             access_expires_at INTEGER, refresh_token TEXT, updated_at INTEGER NOT NULL);
             INSERT INTO sessions VALUES ('kept', NULL, 'p', 'd', 1, 'linked', 5, NULL, 'a', 9, 'r', 7);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].created_at, 0, "unknown for old rows");
    assert_eq!(s.session("kept").unwrap().unwrap().status, Status::Linked);
    assert!(s.create_session(&session("new", "AAAAAAAA", 100)).unwrap());
    drop(s);
    SqliteStore::open(&path).expect("opens again once upgraded");
}

/// The schema and a row exactly as the last release before versioned
/// migrations wrote them (its `SCHEMA` then `MIGRATE_2`, user_version 2).
const RELEASED_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, reg_code TEXT UNIQUE, product_id TEXT NOT NULL, dsn TEXT NOT NULL,
    reg_expires_at INTEGER NOT NULL, status TEXT NOT NULL, interval INTEGER NOT NULL,
    last_poll_at INTEGER, access_token TEXT, access_expires_at INTEGER, refresh_token TEXT,
    updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS login_states (
    state TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    cookie TEXT NOT NULL, verifier TEXT NOT NULL, expires_at INTEGER NOT NULL);
ALTER TABLE sessions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 2;
INSERT INTO sessions VALUES ('linked-1', NULL, 'p', 'd', 1, 'linked', 5, NULL, 'Atza|old', 99999999999, 'Atzr|old', 7, 6);
INSERT INTO sessions VALUES ('pending-1', 'AAAAAAAA', 'p', 'd2', 99999999999, 'pending', 5, NULL, NULL, NULL, NULL, 7, 6);
INSERT INTO login_states VALUES ('st', 'pending-1', 'cookie-1', 'verifier', 99999999999);
";

#[test]
fn a_database_of_the_last_unversioned_release_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("released.sqlite3");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(RELEASED_SCHEMA)
        .unwrap();
    let s = SqliteStore::open(&path).unwrap();
    let got = s.session("linked-1").unwrap().unwrap();
    assert_eq!(got.status, Status::Linked);
    let t = got.tokens.unwrap();
    assert_eq!(t.refresh.expose(), "Atzr|old");
    assert_eq!(t.access.expose(), "Atza|old");
    assert_eq!(s.list().unwrap()[0].created_at, 6);
    assert_eq!(
        s.session_by_code("AAAAAAAA").unwrap().unwrap().id.expose(),
        "pending-1"
    );
    match s.take_state("st", Some("cookie-1"), 10).unwrap() {
        TakeState::Taken(l) => assert_eq!(l.verifier.expose(), "verifier"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.schema_state().unwrap(),
        SchemaState::Current(migrate::latest(migrate::SQLITE))
    );
    drop(s);
    let s = SqliteStore::open(&path).expect("opens again once migrated");
    assert_eq!(
        s.session("linked-1").unwrap().unwrap().status,
        Status::Linked
    );
}

#[test]
fn a_database_migrated_by_a_newer_program_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.sqlite3");
    drop(SqliteStore::open(&path).unwrap());
    let next = migrate::latest(migrate::SQLITE) + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (?1, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            [next],
        )
        .unwrap();
    let e = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(
        e.contains(&format!("schema version {next} is newer")),
        "{e}"
    );
    assert!(e.contains("fix:"), "{e}");
}
