//! `avsd --check-config` and the shipped sample config.

use std::path::Path;
use std::process::{Command, Output};

use avsd_config::{AvsdConfig, StrictConfig};

fn check(path: &Path) -> Output {
    Command::new(support::bin("avsd"))
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap()
}

/// The sample with every `# key = value` line enabled.
fn sample_enabled(files_dir: &Path) -> String {
    let text = std::fs::read_to_string(support::repo().join("config/avsd.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let uncommented = line.strip_prefix("# ").filter(|rest| {
            rest.split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        });
        out.push_str(uncommented.unwrap_or(line));
        out.push('\n');
    }
    // The sample's file paths name files a fresh machine does not have.
    https::install_provider();
    let ca = https::certs::LocalCa::new("test CA").unwrap();
    let device = ca.client("my_avs_device:0001").unwrap();
    for (name, text) in [
        ("companion-ca.pem", &ca.pem.cert),
        ("device.pem", &device.cert),
        ("device.key", &device.key),
        ("avs-ca.pem", &ca.pem.cert),
        ("lwa-ca.pem", &ca.pem.cert),
    ] {
        let p = files_dir.join(name);
        std::fs::write(&p, text).unwrap();
        out = out.replace(&format!("/etc/avsd/{name}"), &p.display().to_string());
    }
    out
}

/// A CA file avsd cannot use is refused by `--check-config` and at start,
/// naming the key, where avsd used to retry forever with `UnknownIssuer`.
#[test]
fn certificate_files_are_read_and_named_by_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avsd.toml");
    let text = sample_enabled(dir.path());
    std::fs::write(&path, &text).unwrap();
    let good_ca = std::fs::read(dir.path().join("avs-ca.pem")).unwrap();
    let other = https::certs::LocalCa::new("other")
        .unwrap()
        .client("my_avs_device:0001")
        .unwrap();
    let cases: [(&str, &[u8], &str, &str); 5] = [
        ("avs-ca.pem", b"hello\n", "avs.ca_file", "no PEM block"),
        ("lwa-ca.pem", &good_ca[..20], "auth.ca_file", "damaged PEM"),
        (
            "companion-ca.pem",
            &good_ca[..20],
            "companion.ca_file",
            "damaged PEM",
        ),
        (
            "device.key",
            other.key.as_bytes(),
            "companion.client_key",
            "is not the key of",
        ),
        (
            "device.pem",
            other.key.as_bytes(),
            "companion.client_cert",
            "no certificate",
        ),
    ];
    for (file, data, key, found) in cases {
        sample_enabled(dir.path());
        std::fs::write(dir.path().join(file), data).unwrap();
        for args in [&["--check-config"][..], &[]] {
            let out = Command::new(support::bin("avsd"))
                .args(args)
                .arg("--config")
                .arg(&path)
                .env_remove("STATE_DIRECTORY")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{file} {args:?}: {err}");
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
            assert!(err.contains(found), "{found}: {err}");
            assert!(
                err.contains(&dir.path().join(file).display().to_string()),
                "{err}"
            );
        }
    }
}

#[test]
fn every_sample_key_parses_and_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let text = sample_enabled(dir.path());
    let cfg: AvsdConfig = avsd_config::parse(Path::new("sample"), &text).unwrap();
    assert_eq!(cfg.companion.url, "https://pi.local:8443");
    assert_eq!(cfg.device.serial.as_deref(), Some("0001"));
    // Every documented key is in the sample, and every sample key documented.
    let doc = text.parse::<toml::Table>().unwrap();
    let mut in_sample = Vec::new();
    for (section, table) in &doc {
        for key in table.as_table().unwrap().keys() {
            in_sample.push(format!("{section}.{key}"));
        }
    }
    let mut documented: Vec<String> = AvsdConfig::HELP
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    in_sample.sort();
    documented.sort();
    assert_eq!(in_sample, documented);
}

#[test]
fn check_config_accepts_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avsd.toml");
    std::fs::write(&path, sample_enabled(dir.path())).unwrap();
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OK") && text.contains("https://pi.local:8443"),
        "{text}"
    );
    // The shipped file as is (all commented) is valid too.
    let out = check(&support::repo().join("config/avsd.toml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_file_key_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avsd.toml");
    let cases = [
        (
            "[companion]\nurl = \"https://a\"\nregister_on_strat = true\n",
            "companion.register_on_strat",
            ":3:",
            "did you mean `register_on_start`",
        ),
        ("[log]\n\nlevel = 3\n", "log.level", ":3:", "one of"),
        (
            "[device]\nproduct_id = \"p\"\nserial = \"\"\n",
            "device.serial",
            ":3:",
            "Pi's serial",
        ),
    ];
    for (text, key, line, fix) in cases {
        std::fs::write(&path, text).unwrap();
        let out = check(&path);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        let place = format!("{}{line}", path.display());
        assert!(err.contains(&place), "no {place} in:\n{err}");
        assert!(err.contains(&format!("`{key}`")), "no key {key} in:\n{err}");
        assert!(err.contains(fix), "no fix {fix:?} in:\n{err}");
    }
    let out = check(&dir.path().join("missing.toml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn help_and_version() {
    let out = Command::new(support::bin("avsd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("avsd {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(support::bin("avsd"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--check-config") && text.contains("org.avsd.Avs1"),
        "{text}"
    );
}

/// Settings in `avsd.toml.d/*.toml` apply over avsd.toml, so they survive
/// upgrades of the shipped file; a bad key there is named with its file
/// and line, by `--check-config` and at start.
#[test]
fn drop_ins_are_read_after_the_main_file_and_checked_as_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avsd.toml");
    std::fs::write(&path, "[log]\nlevel = \"info\"\n").unwrap();
    let dropins = dir.path().join("avsd.toml.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::write(
        dropins.join("50-local.toml"),
        "# mine\n[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    let out = check(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("log level:  debug"), "{text}");
    assert!(text.contains("50-local.toml"), "{text}");

    std::fs::write(dropins.join("60-typo.toml"), "\n[log]\nlevle = \"debug\"\n").unwrap();
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let place = format!("{}:3:", dropins.join("60-typo.toml").display());
    assert!(err.contains(&place) && err.contains("`log.levle`"), "{err}");
    assert!(err.contains("did you mean `level`"), "{err}");
}
