//! `config/companion.toml` and the parser cannot drift; bad configs are
//! refused with file, line, key and a fix, by `--check-config` too.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use avs_companion::CompanionConfig;
use avsd_config::StrictConfig;

const SAMPLE: &str = include_str!("../config/companion.toml");

/// The sample with every `# key = value` line enabled and its paths moved
/// into `dir`, where the files they name are created.
fn enabled_sample(dir: &Path) -> String {
    let mut out = String::new();
    for line in SAMPLE.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        // storage.url and its password_file stay off (they switch from the
        // sample's SQLite file to a PostgreSQL server), and so does the
        // key file the sample only describes.
        let is_key = body.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && !k.contains(' ') && !matches!(k, "url" | "password_file" | "key_file")
        });
        out.push_str(if is_key { body } else { line });
        out.push('\n');
    }
    let moved = out.replace("/etc/avsd/companion/", &format!("{}/", dir.display()));
    let moved = moved.replace("/var/lib/avs-companion/", &format!("{}/", dir.display()));
    write_certs(dir, "raspberrypi.local");
    write_secret(dir, 0o600);
    moved
}

/// A CA and a server certificate for `host`, where the sample's paths
/// point: the check reads what the files hold.
fn write_certs(dir: &Path, host: &str) -> https::certs::LocalCa {
    https::install_provider();
    let ca = https::certs::LocalCa::new("test CA").unwrap();
    let server = ca.server(&[host.to_string()]).unwrap();
    std::fs::write(dir.join("server.crt"), &server.cert).unwrap();
    std::fs::write(dir.join("server.key"), &server.key).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.pem.cert).unwrap();
    std::fs::write(dir.join("lwa-ca.crt"), &ca.pem.cert).unwrap();
    ca
}

fn write_secret(dir: &Path, mode: u32) {
    let p = dir.join("client-secret");
    std::fs::write(&p, "s3cret\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn sample_parses_with_every_key_enabled_and_documents_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path());
    assert!(!text.contains("\n# level"), "every key was enabled");
    let path = dir.path().join("companion.toml");
    let c: CompanionConfig = match avsd_config::parse(&path, &text) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{text}"),
    };
    assert_eq!(c.lwa.authorize_url, "https://www.amazon.com/ap/oa");
    assert_eq!(c.lwa.token_url, "https://api.amazon.com/auth/o2/token");
    assert!(c.server.device_ca_file.is_some() && c.lwa.ca_file.is_some());
    assert!(c.allows("other-product", "0002") && !c.allows("other-product", "0003"));
    assert!(c.allows("my_pi_speaker", "anything"));
    assert_eq!(c.public_base(), "https://raspberrypi.local:8443");
    // Every documented key appears in the sample, and the other way round.
    for (key, _) in CompanionConfig::HELP {
        let leaf = key.rsplit('.').next().unwrap();
        let section = key.split('.').next().unwrap();
        assert!(SAMPLE.contains(&format!("[{section}]")), "{key}");
        if key.contains('.') {
            assert!(
                SAMPLE.contains(&format!("{leaf} = ")),
                "{key} missing from the sample"
            );
        }
    }
}

#[test]
fn defaults_point_at_amazon() {
    let c = CompanionConfig::default();
    assert_eq!(c.lwa.authorize_url, "https://www.amazon.com/ap/oa");
    assert_eq!(c.lwa.token_url, "https://api.amazon.com/auth/o2/token");
    assert_eq!(c.lwa.refresh_margin_secs, 600);
}

fn check(dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("companion.toml");
    std::fs::write(&path, text).unwrap();
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
fn check_config_accepts_the_enabled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path());
    let (code, out, err) = check(dir.path(), &text);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(": OK") && out.contains("https://raspberrypi.local:8443/authresponse"),
        "{out}"
    );
    assert!(!out.contains("s3cret"));
    // When the server certificate must be renewed, and how.
    let pem = std::fs::read_to_string(dir.path().join("server.crt")).unwrap();
    let date = https::check::expiry(&pem).unwrap();
    assert!(
        out.contains(&format!("certificate:  expires on {date}")) && out.contains("--renew-server"),
        "{out}"
    );
}

#[test]
fn typo_is_refused_with_line_key_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path()).replace("refresh_margin_secs", "refresh_margn_secs");
    let line = text
        .lines()
        .position(|l| l.starts_with("refresh_margn_secs"))
        .unwrap()
        + 1;
    let (code, _, err) = check(dir.path(), &text);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("companion.toml:{line}")), "{err}");
    assert!(err.contains("lwa.refresh_margn_secs"), "{err}");
    assert!(err.contains("did you mean `refresh_margin_secs`"), "{err}");
}

#[test]
fn a_client_secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path());
    write_secret(dir.path(), 0o644);
    let (code, _, err) = check(dir.path(), &text);
    assert_eq!(code, 1);
    assert!(err.contains("lwa.client_secret_file"), "{err}");
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains("s3cret"));
}

#[test]
fn semantic_problems_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path())
        .replace(
            "https://raspberrypi.local:8443/authresponse",
            "http://raspberrypi.local/auth",
        )
        .replace("listen = \"0.0.0.0:8443\"", "listen = \"everywhere\"")
        .replace("my_pi_speaker = []\n", "")
        .replace("\"other-product\" = [\"0001\", \"0002\"]\n", "");
    let (code, _, err) = check(dir.path(), &text);
    assert_eq!(code, 1);
    for key in ["server.listen", "lwa.redirect_uri", "products"] {
        assert!(err.contains(&format!("key `{key}`")), "{key}: {err}");
    }
}

/// Each wrong file content is refused by `--check-config`, naming the key,
/// the file, what it holds and the fix, where it used to say OK and the
/// service then failed at every start.
#[test]
fn check_config_reads_what_the_certificate_files_hold() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path());
    let p = |n: &str| dir.path().join(n);
    let ca = write_certs(dir.path(), "raspberrypi.local");
    let ca_der = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(ca.pem.cert.as_bytes())
            .unwrap()
            .to_vec()
    };
    let other = ca.server(&["raspberrypi.local".into()]).unwrap();
    let stranger = ca.server(&["elsewhere.lan".into()]).unwrap();
    let server = std::fs::read(p("server.crt")).unwrap();
    let cases: [(&str, &[u8], &str, &str, &str); 6] = [
        (
            "ca.crt",
            &ca_der,
            "server.device_ca_file",
            "DER (binary) data",
            "openssl x509 -inform der",
        ),
        (
            "lwa-ca.crt",
            b"just some text\n",
            "lwa.ca_file",
            "no PEM block",
            "BEGIN",
        ),
        ("lwa-ca.crt", &server, "lwa.ca_file", "not a CA", "ca.crt"),
        (
            "server.key",
            other.key.as_bytes(),
            "server.key_file",
            "is not the key of the certificate",
            "server.key",
        ),
        (
            "server.crt",
            stranger.cert.as_bytes(),
            "server.cert_file",
            "not for raspberrypi.local",
            "--renew-server --host raspberrypi.local",
        ),
        (
            "server.crt",
            ca.pem.key.as_bytes(),
            "server.cert_file",
            "a private key, no certificate",
            "not its key",
        ),
    ];
    for (file, data, key, found, fix) in cases {
        write_certs(dir.path(), "raspberrypi.local");
        std::fs::write(p(file), data).unwrap();
        if data == stranger.cert.as_bytes() {
            std::fs::write(p("server.key"), &stranger.key).unwrap();
        }
        let (code, out, err) = check(dir.path(), &text);
        assert_eq!(code, 1, "{file} with {found}: {out}{err}");
        assert!(err.contains(&format!("key `{key}`")), "{key}: {err}");
        assert!(
            err.contains(&p(file).display().to_string()),
            "{file}: {err}"
        );
        assert!(
            err.contains(found) && err.contains(fix),
            "{found} / {fix}: {err}"
        );
    }
}

/// The service run with a bad file (the check skipped) names the key and
/// exits before it says it listens: systemd's ExecStartPre would have
/// caught it, and a hand-run service must not look started.
#[test]
fn the_service_names_the_key_of_a_bad_file_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = enabled_sample(dir.path()).replace("0.0.0.0:8443", "127.0.0.1:0");
    let path = dir.path().join("companion.toml");
    std::fs::write(&path, &text).unwrap();
    std::fs::write(dir.path().join("ca.crt"), "not pem\n").unwrap();
    let out = Command::new(support::bin("avs-companion"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server.device_ca_file"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}
