//! Issue 15, item 5: the local CA of `avs-companion make-certs` is fenced
//! in. It signs no other CA (path length 0), only the `--host` names (name
//! constraints, which a phone's TLS stack enforces: here rustls/webpki
//! refuses a certificate its key signed for another name), and its key is
//! written apart from what the service reads.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

/// The CA's name as make-certs writes it (its issuer name on every leaf).
const CA_NAME: &str = "avs-companion local CA";

fn make_certs(out: &Path, hosts: &[&str]) {
    let mut cmd = Command::new(support::bin("avs-companion"));
    cmd.arg("make-certs").arg("--out").arg(out);
    for h in hosts {
        cmd.args(["--host", h]);
    }
    let done = cmd.output().expect("avs-companion runs");
    assert!(
        done.status.success(),
        "make-certs failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn der(pem: &str) -> CertificateDer<'static> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("a PEM certificate");
    CertificateDer::from(pem.contents)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A verifier that trusts only the CA in `ca_pem`, as a phone that
/// installed it does.
fn verifier(ca_pem: &str) -> Arc<WebPkiServerVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(der(ca_pem))
        .expect("the CA is a usable trust anchor");
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

fn verify(v: &WebPkiServerVerifier, leaf_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    v.verify_server_cert(&der(leaf_pem), &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

/// A server certificate for `name` signed with the CA's key, as whoever
/// stole `ca.key` would make one.
fn forged_leaf(ca_key_pem: &str, name: &str) -> String {
    let key = rcgen::KeyPair::from_pem(ca_key_pem).expect("ca.key is a PEM key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    let issuer = rcgen::Issuer::new(ca, key);
    let mut leaf = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    leaf.signed_by(&leaf_key, &issuer).unwrap().pem()
}

#[test]
fn the_ca_key_is_kept_apart_from_what_the_service_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    make_certs(&out, &["127.0.0.1", "localhost"]);
    for f in ["ca.crt", "server.crt", "server.key"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(
        !out.join("ca.key").exists(),
        "ca.key sits next to the service's own files"
    );
    let ca_dir = out.join(https::certs::CA_DIR);
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode(&out.join("server.key")), 0o600);
    assert_eq!(read(&ca_dir.join("ca.crt")), read(&out.join("ca.crt")));
}

#[test]
fn the_ca_has_path_length_zero_and_permits_only_the_host_names() {
    https::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    make_certs(&out, &["127.0.0.1", "localhost"]);
    let ca_pem = read(&out.join("ca.crt"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let ca = pem.parse_x509().expect("ca.crt parses");

    let basic = ca.basic_constraints().unwrap().expect("basicConstraints");
    assert!(basic.value.ca);
    assert_eq!(basic.value.path_len_constraint, Some(0));

    let nc = ca
        .name_constraints()
        .unwrap()
        .expect("a nameConstraints extension");
    assert!(nc.critical, "name constraints must be critical (RFC 5280)");
    let permitted: Vec<String> = nc
        .value
        .permitted_subtrees
        .as_ref()
        .expect("permitted subtrees")
        .iter()
        .map(|s| match &s.base {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) => format!("IP:{b:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        permitted,
        ["IP:[127, 0, 0, 1, 255, 255, 255, 255]", "DNS:localhost"],
        "exactly the --host names, an IP as a /32"
    );
    assert!(nc.value.excluded_subtrees.is_none());

    // The service's certificate verifies for both names...
    let v = verifier(&ca_pem);
    let server = read(&out.join("server.crt"));
    verify(&v, &server, "localhost").expect("server.crt for localhost");
    verify(&v, &server, "127.0.0.1").expect("server.crt for 127.0.0.1");

    // ...and so does a new one for a permitted name, so the refusals below
    // are about the names, not about how the certificate was made.
    let ca_key = read(&out.join(https::certs::CA_DIR).join("ca.key"));
    let fresh = forged_leaf(&ca_key, "localhost");
    verify(&v, &fresh, "localhost").expect("a leaf for a permitted name");

    // Whoever holds ca.key cannot impersonate another site or address.
    for other in ["www.example.com", "10.0.0.1"] {
        let forged = forged_leaf(&ca_key, other);
        let err = verify(&v, &forged, other).expect_err(other);
        assert!(
            format!("{err:?}").contains("NameConstraintViolation"),
            "{other}: {err:?}"
        );
    }
}

#[test]
fn a_kind_of_name_not_among_the_hosts_is_excluded_as_a_whole() {
    https::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    // Only an IP address: a DNS constraint would otherwise be absent, and
    // every DNS name allowed.
    make_certs(&out, &["192.168.1.20"]);
    let ca_pem = read(&out.join("ca.crt"));
    let v = verifier(&ca_pem);
    verify(&v, &read(&out.join("server.crt")), "192.168.1.20").expect("server.crt");
    let ca_key = read(&out.join(https::certs::CA_DIR).join("ca.key"));
    for other in ["www.example.com", "192.168.1.21", "::1"] {
        let forged = forged_leaf(&ca_key, other);
        let err = verify(&v, &forged, other).expect_err(other);
        assert!(
            format!("{err:?}").contains("NameConstraintViolation"),
            "{other}: {err:?}"
        );
    }
}

fn run(out: &Path, args: &[&str]) -> (bool, String, String) {
    let done = Command::new(support::bin("avs-companion"))
        .arg("make-certs")
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("avs-companion runs");
    (
        done.status.success(),
        String::from_utf8_lossy(&done.stdout).into_owned(),
        String::from_utf8_lossy(&done.stderr).into_owned(),
    )
}

/// Issue 22: a second run replaced ca.crt and ca.key without a word,
/// breaking every phone and device that trusted the old CA.
#[test]
fn an_existing_ca_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    make_certs(&out, &["pi.local"]);
    let ca = read(&out.join("ca.crt"));
    let ca_key = read(&out.join("ca/ca.key"));
    let (ok, _, err) = run(&out, &["--host", "pi.local"]);
    assert!(!ok, "a second run without --force succeeded");
    assert!(
        err.contains("already there") && err.contains("--renew-server"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(read(&out.join("ca.crt")), ca, "ca.crt was replaced");
    assert_eq!(read(&out.join("ca/ca.key")), ca_key, "ca.key was replaced");
    let (ok, _, err) = run(&out, &["--host", "pi.local", "--force"]);
    assert!(ok, "{err}");
    assert_ne!(read(&out.join("ca.crt")), ca, "--force made a new CA");
}

/// `--renew-server` signs a new server certificate with the CA that is
/// there, so what trusts the CA keeps working; it refuses a name the CA
/// may not sign.
#[test]
fn renew_server_keeps_the_ca_and_its_name_constraints() {
    https::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    make_certs(&out, &["pi.local", "192.168.1.20"]);
    let ca = read(&out.join("ca.crt"));
    let ca_key = read(&out.join("ca/ca.key"));
    let old_server = read(&out.join("server.crt"));
    let (ok, stdout, err) = run(&out, &["--renew-server", "--host", "pi.local"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("existing CA"), "{stdout}");
    assert_eq!(read(&out.join("ca.crt")), ca);
    assert_eq!(read(&out.join("ca/ca.key")), ca_key);
    let server = read(&out.join("server.crt"));
    assert_ne!(server, old_server, "no new server certificate");
    verify(&verifier(&ca), &server, "pi.local").expect("the renewed certificate verifies");

    // The CA moved offline is given back with --ca-dir.
    let offline = dir.path().join("offline");
    std::fs::rename(out.join("ca"), &offline).unwrap();
    let (ok, _, err) = run(&out, &["--renew-server", "--host", "192.168.1.20"]);
    assert!(!ok && err.contains("--ca-dir"), "{err}");
    let (ok, _, err) = run(
        &out,
        &[
            "--renew-server",
            "--ca-dir",
            offline.to_str().unwrap(),
            "--host",
            "192.168.1.20",
        ],
    );
    assert!(ok, "{err}");
    verify(
        &verifier(&ca),
        &read(&out.join("server.crt")),
        "192.168.1.20",
    )
    .expect("renewed");

    let (ok, _, err) = run(
        &out,
        &[
            "--renew-server",
            "--ca-dir",
            offline.to_str().unwrap(),
            "--host",
            "other.lan",
        ],
    );
    assert!(!ok, "a name outside the CA's constraints was signed");
    assert!(
        err.contains("other.lan") && err.contains("--force"),
        "{err}"
    );
}

/// A URL, a port or a space in --host made a certificate nothing matches.
#[test]
fn hosts_that_are_no_host_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    for (host, hint) in [
        ("https://pi.local", "without https://"),
        ("pi.local:8443", "without :PORT"),
        ("pi local", "letters, digits and hyphens"),
        ("pi-.local", "letters, digits and hyphens"),
        ("pi..local", "letters, digits and hyphens"),
    ] {
        let (ok, _, err) = run(&out, &["--host", "localhost", "--host", host]);
        assert!(!ok, "{host} was accepted");
        assert!(
            err.contains(&format!("`{host}`")) && err.contains(hint),
            "{host}: {err}"
        );
    }
    assert!(
        !out.join("ca.crt").exists(),
        "files were written for a refused host"
    );
    for host in ["pi.local", "fe80::1", "10.0.0.7", "my-pi"] {
        let (ok, _, err) = run(&out, &["--host", host, "--force"]);
        assert!(ok, "{host}: {err}");
    }
}

/// make-certs says when the server certificate expires, and the date is
/// the certificate's own.
#[test]
fn make_certs_says_when_the_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let (ok, stdout, err) = run(&out, &["--host", "pi.local"]);
    assert!(ok, "{err}");
    let server = read(&out.join("server.crt"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(server.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let until = cert.validity().not_after.to_datetime();
    let date = format!(
        "{:04}-{:02}-{:02}",
        until.year(),
        u8::from(until.month()),
        until.day()
    );
    assert!(
        stdout.contains(&format!("server certificate expires on {date}")),
        "{date}: {stdout}"
    );
    assert!(
        stdout.contains("--renew-server --host pi.local"),
        "{stdout}"
    );
    assert!(stdout.contains("the CA expires on 20"), "{stdout}");
    // A key made by root is one the service user cannot read: it says so.
    assert_eq!(
        stdout.contains(&format!(
            "chown avs-companion: {}/server.key",
            out.display()
        )),
        support::is_root(),
        "{stdout}"
    );
}
