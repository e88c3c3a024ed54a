//! What `--check-config` of avsd and the companion checks inside the
//! certificate and key files a config names: that a file holds PEM
//! certificates (not DER, not text, not a key), that a CA file holds CAs,
//! that a key belongs to its certificate, the validity dates, and that a
//! server certificate names the host it is reached at. A file that passes
//! these loads at run time; without them a bad CA file was read as "no
//! certificates" and the program retried forever with `UnknownIssuer`.

use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// What is wrong with one file, and what to do about it; the caller adds
/// the config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// What was found, naming the file.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl FileProblem {
    fn new(path: &Path, what: impl std::fmt::Display, fix: impl Into<String>) -> Self {
        Self {
            message: format!("`{}` {what}", path.display()),
            fix: fix.into(),
        }
    }
}

const MAKE_CERTS: &str = "make them with `avs-companion make-certs`";

/// Read a file that must hold PEM blocks, saying what it holds instead
/// when it does not: DER, plain text, or blocks of another kind.
fn pem_sections(path: &Path, want: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, FileProblem> {
    let data = std::fs::read(path).map_err(|e| {
        FileProblem::new(
            path,
            format!("cannot be read: {e}"),
            "fix the path, or make the file readable by the service user",
        )
    })?;
    let mut sections = Vec::new();
    let mut reader = std::io::BufReader::new(data.as_slice());
    loop {
        match rustls_pki_types::pem::from_buf(&mut reader) {
            Ok(Some(section)) => sections.push(section),
            Ok(None) => break,
            Err(e) => {
                return Err(FileProblem::new(
                    path,
                    format!("is damaged PEM: {e}"),
                    format!("replace it with an intact PEM {want} file ({MAKE_CERTS})"),
                ));
            }
        }
    }
    if !sections.is_empty() {
        return Ok(sections);
    }
    let found = if data.first() == Some(&0x30) {
        "holds DER (binary) data, not PEM text".to_string()
    } else if data.iter().all(u8::is_ascii_whitespace) {
        "is empty".to_string()
    } else {
        let first = String::from_utf8_lossy(&data);
        let first = first.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let first: String = first.chars().take(40).collect();
        format!("holds no PEM block (it starts with {first:?})")
    };
    let fix = if data.first() == Some(&0x30) {
        format!(
            "convert it to PEM (e.g. `openssl x509 -inform der -in {0} -out {0}.pem`) and name the .pem file",
            path.display()
        )
    } else {
        format!("name a PEM {want} file, with -----BEGIN lines ({MAKE_CERTS})")
    };
    Err(FileProblem::new(path, found, fix))
}

fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "a certificate",
        SectionKind::PublicKey => "a public key",
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey => {
            "a private key"
        }
        SectionKind::Crl => "a revocation list",
        SectionKind::Csr => "a certificate request",
        SectionKind::EchConfigList => "an ECH config list",
        _ => "an unknown kind of PEM block",
    }
}

/// Every certificate of a PEM file, each one parsed as X.509.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileProblem> {
    let sections = pem_sections(path, "certificate")?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        let kind = kind_name(sections[0].0);
        let fix = if kind == "a private key" {
            "name the certificate file here (e.g. server.crt or ca.crt), not its key".to_string()
        } else {
            format!("name a file with BEGIN CERTIFICATE blocks ({MAKE_CERTS})")
        };
        return Err(FileProblem::new(
            path,
            format!("holds {kind}, no certificate"),
            fix,
        ));
    }
    for der in &certs {
        parse(path, der)?;
    }
    Ok(certs)
}

/// A file of trusted CA certificates: PEM, every one a CA and within its
/// dates.
pub fn ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileProblem> {
    let certs = certificates(path)?;
    for der in &certs {
        let cert = parse(path, der)?;
        if !cert.is_ca() {
            return Err(FileProblem::new(
                path,
                format!(
                    "holds the certificate of {}, which is not a CA (a server or device certificate)",
                    names(&cert).join(", ")
                ),
                "name the CA certificate that signed it (ca.crt of `avs-companion make-certs`)",
            ));
        }
        dates(path, &cert, SystemTime::now())?;
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileProblem> {
    let sections = pem_sections(path, "private key")?;
    for (kind, der) in &sections {
        if let Some(key) = PrivateKeyDer::from_pem(*kind, der.clone()) {
            return Ok(key);
        }
    }
    let kind = kind_name(sections[0].0);
    Err(FileProblem::new(
        path,
        format!("holds {kind}, no private key"),
        "name the key file here (e.g. server.key), not the certificate",
    ))
}

/// A certificate chain and its key, as a server or client presents them:
/// both parse, the key belongs to the first certificate, which is within
/// its dates, is not a CA, and (with `host`) names `host`. The problem
/// says which of the two files it is about: `Err((true, _))` is the key.
pub fn cert_and_key(
    cert_path: &Path,
    key_path: &Path,
    host: Option<&str>,
) -> Result<Vec<CertificateDer<'static>>, (bool, FileProblem)> {
    let chain = certificates(cert_path).map_err(|p| (false, p))?;
    let key = private_key(key_path).map_err(|p| (true, p))?;
    let leaf = parse(cert_path, &chain[0]).map_err(|p| (false, p))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        (
            true,
            FileProblem::new(
                key_path,
                format!("holds a key rustls cannot use: {e}"),
                "use an ECDSA P-256/P-384, Ed25519 or RSA key (`avs-companion make-certs` makes ECDSA)",
            ),
        )
    })?;
    if let Some(public) = signer.public_key()
        && public.as_ref() != leaf.public_key().raw
    {
        return Err((
            true,
            FileProblem::new(
                key_path,
                format!(
                    "is not the key of the certificate in `{}` (for {})",
                    cert_path.display(),
                    names(&leaf).join(", ")
                ),
                "name the key made together with that certificate (server.key beside server.crt)",
            ),
        ));
    }
    if leaf.is_ca() {
        return Err((
            false,
            FileProblem::new(
                cert_path,
                "holds a CA certificate first; TLS peers refuse a CA as a server or device certificate",
                "name the certificate the CA signed (server.crt), not ca.crt",
            ),
        ));
    }
    dates(cert_path, &leaf, SystemTime::now()).map_err(|p| (false, p))?;
    if let Some(host) = host {
        covers(cert_path, &leaf, host).map_err(|p| (false, p))?;
    }
    Ok(chain)
}

fn parse<'a>(path: &Path, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, FileProblem> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| {
            FileProblem::new(
                path,
                format!("holds a certificate that is not valid X.509: {e}"),
                format!("replace the file ({MAKE_CERTS})"),
            )
        })
}

/// The validity dates of a certificate against `now`.
fn dates(path: &Path, cert: &X509Certificate<'_>, now: SystemTime) -> Result<(), FileProblem> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let from = cert.validity().not_before.timestamp();
    let until = cert.validity().not_after.timestamp();
    let who = names(cert).join(", ");
    if now < from {
        return Err(FileProblem::new(
            path,
            format!(
                "holds a certificate for {who} that is not valid until {} (this machine's clock says {})",
                date(from),
                date(now)
            ),
            "set the clock right (a Pi without network time starts in the past), or make the certificate again",
        ));
    }
    if now > until {
        return Err(FileProblem::new(
            path,
            format!(
                "holds a certificate for {who} that expired on {}",
                date(until)
            ),
            "renew it: `avs-companion make-certs --renew-server` for the server certificate, \
             or make a new CA and trust it again",
        ));
    }
    Ok(())
}

/// When the first certificate of `pem` expires, as YYYY-MM-DD.
pub fn expiry(pem: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(date(cert.validity().not_after.timestamp()))
}

/// Whether a server certificate names `host` (a DNS name, `*.` wildcards
/// matching one label, or an IP address).
fn covers(path: &Path, cert: &X509Certificate<'_>, host: &str) -> Result<(), FileProblem> {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    let ip = host.parse::<IpAddr>().ok();
    let mut ok = false;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            ok |= match (name, ip) {
                (GeneralName::DNSName(d), None) => dns_matches(d, host),
                (GeneralName::IPAddress(bytes), Some(ip)) => match ip {
                    IpAddr::V4(v4) => *bytes == v4.octets(),
                    IpAddr::V6(v6) => *bytes == v6.octets(),
                },
                _ => false,
            };
        }
    }
    if ok {
        return Ok(());
    }
    Err(FileProblem::new(
        path,
        format!(
            "holds a certificate for {}, not for {host}, so browsers and devices refuse it",
            names(cert).join(", ")
        ),
        format!(
            "make a server certificate for it: `avs-companion make-certs --renew-server --host {host} …`, \
             or use the name the certificate has"
        ),
    ))
}

fn dns_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => pattern.trim_end_matches('.') == host,
    }
}

/// The subject alternative names (or else the common names) of a
/// certificate, for messages.
fn names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) => out.push((*s).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => out
                        .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or([0; 4])).to_string()),
                    16 => out.push(
                        IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or([0; 16])).to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if out.is_empty() {
        out.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(|s| format!("\"{s}\""))),
        );
    }
    if out.is_empty() {
        out.push("no name".into());
    }
    out
}

/// A Unix time as YYYY-MM-DD (UTC).
fn date(secs: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::LocalCa;

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn dates_print_as_calendar_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_798_761_600), "2027-01-01");
    }

    #[test]
    fn der_text_and_keys_are_told_apart_from_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::new("t").unwrap();
        let der = CertificateDer::from_pem_slice(ca.pem.cert.as_bytes()).unwrap();
        let p = write(dir.path(), "ca.der", &der);
        let e = ca_file(&p).unwrap_err();
        assert!(e.message.contains("DER"), "{e:?}");
        assert!(e.fix.contains("openssl x509 -inform der"), "{e:?}");
        let p = write(dir.path(), "ca.txt", b"hello\n");
        assert!(ca_file(&p).unwrap_err().message.contains("no PEM block"));
        let p = write(dir.path(), "ca.key", ca.pem.key.as_bytes());
        let e = ca_file(&p).unwrap_err();
        assert!(e.message.contains("a private key, no certificate"), "{e:?}");
        let p = write(dir.path(), "ca.crt", ca.pem.cert.as_bytes());
        assert_eq!(ca_file(&p).unwrap().len(), 1);
    }

    #[test]
    fn a_leaf_is_no_ca_and_a_key_must_match_and_names_must_cover_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::new("t").unwrap();
        let server = ca.server(&["pi.local".into(), "192.0.2.7".into()]).unwrap();
        let other = ca.server(&["pi.local".into()]).unwrap();
        let crt = write(dir.path(), "server.crt", server.cert.as_bytes());
        let key = write(dir.path(), "server.key", server.key.as_bytes());
        let wrong = write(dir.path(), "other.key", other.key.as_bytes());
        assert!(ca_file(&crt).unwrap_err().message.contains("not a CA"));
        assert!(cert_and_key(&crt, &key, Some("pi.local")).is_ok());
        assert!(cert_and_key(&crt, &key, Some("PI.local.")).is_ok());
        assert!(cert_and_key(&crt, &key, Some("192.0.2.7")).is_ok());
        let (is_key, e) = cert_and_key(&crt, &wrong, None).unwrap_err();
        assert!(is_key && e.message.contains("is not the key of"), "{e:?}");
        let (is_key, e) = cert_and_key(&crt, &key, Some("pi.lan")).unwrap_err();
        assert!(!is_key && e.message.contains("not for pi.lan"), "{e:?}");
        let (is_key, e) = cert_and_key(&key, &crt, None).unwrap_err();
        assert!(!is_key && e.message.contains("no certificate"), "{e:?}");
        assert!(dns_matches("*.example.org", "a.example.org"));
        assert!(!dns_matches("*.example.org", "a.b.example.org"));
    }

    #[test]
    fn validity_dates_are_checked() {
        let ca = LocalCa::new("t").unwrap();
        let der = CertificateDer::from_pem_slice(ca.pem.cert.as_bytes()).unwrap();
        let p = Path::new("ca.crt");
        let cert = parse(p, &der).unwrap();
        assert!(dates(p, &cert, SystemTime::now()).is_ok());
        let past = UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let e = dates(p, &cert, past).unwrap_err();
        assert!(e.message.contains("not valid until"), "{e:?}");
        let future = SystemTime::now() + std::time::Duration::from_secs(20 * 366 * 86_400);
        let e = dates(p, &cert, future).unwrap_err();
        assert!(e.message.contains("expired on"), "{e:?}");
        assert!(expiry(&ca.pem.cert).is_some_and(|d| d.len() == 10));
    }
}
