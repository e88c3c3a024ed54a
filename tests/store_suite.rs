//! The companion's store suite (`avs_companion::store::suite`) on both
//! backends, with refresh tokens sealed by a key file: SQLite in a
//! temporary directory and a real PostgreSQL started by
//! `support::postgres`; what only PostgreSQL has (password logins,
//! concurrent migration by several instances, errors in words); and the
//! sealing at rest on both (nothing in clear, wrong keys refused, rotation).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use avs_companion::CompanionConfig;
use avs_companion::store::{self, SchemaState, Store, suite};
use support::postgres::Postgres;

/// A key file in `dir` with a new key per id, the last newest.
fn key_file(dir: &Path, ids: &[&str]) -> PathBuf {
    let path = dir.join("store.key");
    let text: String = ids
        .iter()
        .map(|id| store::seal::new_key_line(id).unwrap())
        .collect();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn sqlite_config(dir: &Path) -> CompanionConfig {
    let mut c = CompanionConfig::default();
    c.storage.database = Some(dir.join("companion.sqlite3"));
    c
}

fn pg_config(pg: &Postgres, url: String) -> CompanionConfig {
    let mut c = CompanionConfig::default();
    c.storage.url = Some(url);
    c.storage.password_file = Some(pg.password_file());
    c.storage.max_connections = 4;
    c
}

#[test]
fn the_store_suite_passes_on_sqlite_with_sealed_tokens() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), &["k1"]);
    let mut dirs = Vec::new();
    suite::run_all(|_| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = sqlite_config(dir.path());
        c.storage.key_file = Some(key.clone());
        dirs.push(dir);
        store::open(&c).unwrap()
    });
}

#[test]
fn the_store_suite_passes_on_postgresql_with_sealed_tokens() {
    let pg = Postgres::start();
    let key = key_file(pg.socket_dir(), &["k1"]);
    suite::run_all(|_| {
        let mut c = pg_config(&pg, pg.fresh_database());
        c.storage.key_file = Some(key.clone());
        store::open(&c).unwrap()
    });
}

/// Link a session holding refresh token `Atzr|<n>` and leave a login
/// state with verifier `verifier` pending for another.
fn fill(s: &dyn Store, n: u32) {
    let mut pending = suite::session(&format!("p{n}"), &format!("P{n:07}"), u64::MAX / 4);
    pending.dsn = format!("pending-{n}");
    assert!(s.create_session(&pending).unwrap());
    s.add_state(&suite::state(
        &format!("st{n}"),
        &format!("p{n}"),
        u64::MAX / 4,
    ))
    .unwrap();
    let mut linked = suite::session(&format!("s{n}"), &format!("L{n:07}"), u64::MAX / 4);
    linked.dsn = format!("linked-{n}");
    assert!(s.create_session(&linked).unwrap());
    assert!(s.link(&format!("s{n}"), &suite::tokens(n)).unwrap());
}

/// Every secret still opens: the refresh token and the verifier.
fn still_opens(s: &dyn Store, n: u32) {
    let got = s.session(&format!("s{n}")).unwrap().unwrap();
    assert_eq!(got.tokens.unwrap().refresh.expose(), format!("Atzr|{n}"));
    match s
        .take_state(&format!("st{n}"), Some("cookie-1"), 10)
        .unwrap()
    {
        store::TakeState::Taken(l) => assert_eq!(l.verifier.expose(), "verifier"),
        other => panic!("{other:?}"),
    }
}

/// The bytes of the SQLite database and its WAL.
fn sqlite_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["companion.sqlite3", "companion.sqlite3-wal"] {
        all.extend(std::fs::read(dir.join(f)).unwrap_or_default());
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_refresh_token_or_verifier_lies_in_clear_in_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sqlite_config(dir.path());
    c.storage.key_file = Some(key_file(dir.path(), &["k1"]));
    let s = store::open(&c).unwrap();
    fill(s.as_ref(), 7);
    let bytes = sqlite_bytes(dir.path());
    assert!(
        contains(&bytes, "Atza|7"),
        "the file is readable as it is (access tokens stay clear)"
    );
    assert!(!contains(&bytes, "Atzr|7"));
    assert!(!contains(&bytes, "verifier\0") && contains(&bytes, "sealed:k1:"));
    still_opens(s.as_ref(), 7);
}

#[test]
fn no_refresh_token_or_verifier_lies_in_clear_in_the_postgresql_tables() {
    let pg = Postgres::start();
    let url = pg.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut c = pg_config(&pg, url);
    c.storage.key_file = Some(key_file(pg.socket_dir(), &["k1"]));
    let s = store::open(&c).unwrap();
    fill(s.as_ref(), 7);
    let tables = pg.psql(
        &db,
        "SELECT s::text FROM sessions s UNION ALL SELECT l::text FROM login_states l",
    );
    assert!(tables.contains("Atza|7"), "{tables}");
    assert!(!tables.contains("Atzr|7"), "{tables}");
    assert!(!tables.contains(",verifier,"), "{tables}");
    assert_eq!(tables.matches("sealed:k1:").count(), 2, "{tables}");
    still_opens(s.as_ref(), 7);
}

#[test]
fn a_wrong_or_missing_key_is_refused_and_rotation_keeps_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut c = sqlite_config(dir.path());
    // A database from before the key file: sealed at the first start with one.
    {
        let s = store::open(&c).unwrap();
        fill(s.as_ref(), 1);
        assert!(contains(&sqlite_bytes(dir.path()), "Atzr|1"));
    }
    let k1 = key_file(keys.path(), &["k1"]);
    let k1_text = std::fs::read_to_string(&k1).unwrap();
    c.storage.key_file = Some(k1.clone());
    {
        let s = store::open(&c).unwrap();
        fill(s.as_ref(), 2);
    }
    // Another key under the same id, no key at all, a file without k1.
    key_file(keys.path(), &["k1"]);
    let e = store::open(&c).err().unwrap().to_string();
    assert!(
        e.starts_with("storage.key_file: key `k1` in storage.key_file is not the key this database was sealed with"),
        "{e}"
    );
    key_file(keys.path(), &["k2"]);
    let e = store::open(&c).err().unwrap().to_string();
    assert!(
        e.contains("sealed with key `k1`, which storage.key_file lacks"),
        "{e}"
    );
    let mut none = sqlite_config(dir.path());
    none.storage.key_file = None;
    let e = store::open(&none).err().unwrap().to_string();
    assert!(e.contains("storage.key_file is not set"), "{e}");

    // Rotation: add k2 after k1, reseal, drop k1.
    let k2_line = store::seal::new_key_line("k2").unwrap();
    std::fs::write(&k1, format!("{k1_text}{k2_line}")).unwrap();
    let s = store::open_sealed(&c).unwrap();
    assert_eq!(
        s.rotate().unwrap(),
        4,
        "two refresh tokens and two verifiers resealed"
    );
    drop(s);
    std::fs::write(&k1, &k2_line).unwrap();
    let s = store::open(&c).unwrap();
    let bytes = sqlite_bytes(dir.path());
    assert!(contains(&bytes, "sealed:k2:"));
    for n in [1, 2] {
        still_opens(s.as_ref(), n);
    }
}
#[test]
fn postgresql_is_migrated_once_by_instances_starting_together_and_keeps_data() {
    let pg = Postgres::start();
    let config = Arc::new(pg_config(&pg, pg.fresh_database()));
    assert!(matches!(
        store::check(&config).unwrap(),
        SchemaState::Behind { at: None, .. }
    ));
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || store::open(&config).map(|_| ()))
        })
        .collect();
    for s in starts {
        s.join().unwrap().expect("every instance opens the store");
    }
    let SchemaState::Current(v) = store::check(&config).unwrap() else {
        panic!("not current after opening");
    };
    let applied = pg.psql(
        config
            .storage
            .url
            .as_deref()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap(),
        "SELECT count(*) FROM refinery_schema_history",
    );
    assert_eq!(applied.trim(), v.to_string(), "each migration applied once");
    let s = store::open(&config).unwrap();
    assert!(
        s.create_session(&suite::session("kept", "AAAAAAAA", u64::MAX / 4))
            .unwrap()
    );
    drop(s);
    let s = store::open(&config).unwrap();
    assert!(s.session("kept").unwrap().is_some());
}

#[test]
fn postgresql_failures_are_told_in_words() {
    let pg = Postgres::start();
    let url = pg.fresh_database();

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut c = pg_config(&pg, url.clone());
    c.storage.password_file = Some(wrong);
    let e = store::check(&c).unwrap_err().to_string();
    assert!(e.contains("authentication failed"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");

    let mut c = pg_config(&pg, url.clone());
    c.storage.password_file = None;
    let e = store::open(&c).err().unwrap().to_string();
    assert!(e.contains("none is configured"), "{e}");

    let c = pg_config(&pg, pg.url("no_such_db"));
    let e = store::check(&c).unwrap_err().to_string();
    assert!(e.contains("database does not exist"), "{e}");

    let c = pg_config(&pg, url.replace("%2F", "%2Fnowhere%2F"));
    let e = store::check(&c).unwrap_err().to_string();
    assert!(e.contains("cannot reach the database"), "{e}");
}
