//! The companion's store suite (`avs_companion::store::suite`) on both
//! backends: SQLite in a temporary directory and a real PostgreSQL started
//! by `support::postgres`; then what only PostgreSQL has (password logins,
//! concurrent migration by several instances, errors in words).

use std::sync::Arc;

use avs_companion::CompanionConfig;
use avs_companion::store::{self, SchemaState, suite};
use support::postgres::Postgres;

fn pg_config(pg: &Postgres, url: String) -> CompanionConfig {
    let mut c = CompanionConfig::default();
    c.storage.url = Some(url);
    c.storage.password_file = Some(pg.password_file());
    c.storage.max_connections = 4;
    c
}

#[test]
fn the_store_suite_passes_on_sqlite() {
    let mut dirs = Vec::new();
    suite::run_all(|_| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = CompanionConfig::default();
        c.storage.database = Some(dir.path().join("companion.sqlite3"));
        dirs.push(dir);
        store::open(&c).unwrap()
    });
}

#[test]
fn the_store_suite_passes_on_postgresql() {
    let pg = Postgres::start();
    suite::run_all(|_| store::open(&pg_config(&pg, pg.fresh_database())).unwrap());
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
