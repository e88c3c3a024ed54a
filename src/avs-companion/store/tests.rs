use super::*;

use super::suite::{session, tokens};

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db/companion.sqlite3")).unwrap();
    (dir, store)
}

#[test]
fn the_store_suite_passes_on_sqlite() {
    let mut dirs = Vec::new();
    super::suite::run_all(|_| {
        let (d, s) = open();
        dirs.push(d);
        Arc::new(s) as Arc<dyn Store>
    });
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
