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
