//! The companion on PostgreSQL, as an operator meets it: `--check-config`
//! connects to the database and says in words what is wrong (unreachable,
//! authentication, a schema newer than the program), and instances sharing
//! one database refresh a session once.

use std::process::Command;

use support::companion::Env;
use support::postgres::Postgres;

/// The test companion config, on PostgreSQL database `url`.
fn pg_toml(env: &Env, url: &str, password_file: &std::path::Path) -> String {
    let sqlite = format!("database = \"{}\"", env.db.display());
    env.companion_toml(
        "127.0.0.1:0",
        "https://localhost:8443/authresponse",
        "https://127.0.0.1:9",
        "",
    )
    .replace(
        &sqlite,
        &format!(
            "url = \"{url}\"\npassword_file = \"{}\"",
            password_file.display()
        ),
    )
}

/// `avs-companion --check-config` on `toml`: (exit code, stdout, stderr).
fn check(env: &Env, toml: &str) -> (i32, String, String) {
    let path = env.dir.path().join("fleet.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(support::bin("avs-companion"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_connects_to_postgresql_and_says_what_is_wrong() {
    let mut pg = Postgres::start();
    let env = Env::new();
    let url = pg.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_string();

    let (code, out, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("schema:       no schema yet"), "{out}");

    // The service migrates at start; the check then finds it current.
    let mut config = avs_companion::CompanionConfig::default();
    config.storage.url = Some(url.clone());
    config.storage.password_file = Some(pg.password_file());
    drop(avs_companion::store::open(&config).unwrap());
    let (code, out, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(", current"), "{out}");

    let wrong = env.dir.path().join("wrong-password");
    std::fs::write(&wrong, "nope\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &wrong));
    assert_eq!(code, 1);
    assert!(err.contains("authentication failed"), "{err}");

    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &wrong));
    assert_eq!(code, 1);
    assert!(
        err.contains("storage.password_file") && err.contains("chmod 600"),
        "{err}"
    );

    pg.psql(
        &db,
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
    );
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 1);
    assert!(
        err.contains("schema version 99 is newer than this avs-companion knows"),
        "{err}"
    );

    pg.stop();
    let (code, _, err) = check(&env, &pg_toml(&env, &url, &pg.password_file()));
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the database"), "{err}");
}
