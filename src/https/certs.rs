//! Making a local CA and the certificates it signs, for a Pi on a LAN and for
//! tests. rustls refuses a self-signed leaf as a server certificate
//! (`CaUsedAsEndEntity`), so a CA always signs the leaf.
//!
//! A phone that trusts the CA of `make-certs` trusts whatever its key signs,
//! so that CA is fenced in: it signs no other CA (path length 0) and only
//! names the service is reached at (name constraints for the `--host`
//! names), and its key is written apart from what the service reads.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints,
};

use super::TlsError;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pem { cert, key: *** }")
    }
}

/// A local certificate authority that can sign server and device certs.
pub struct LocalCa {
    /// The CA certificate (what clients trust) and its key.
    pub pem: Pem,
    issuer: Issuer<'static, KeyPair>,
}

impl LocalCa {
    /// A new CA named `name`, valid for ten years, that signs no other CA.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        Self::make(name, None)
    }

    /// Like [`LocalCa::new`], and valid only for `hosts` (DNS names, with
    /// their subdomains, and IP addresses): a certificate it signs for any
    /// other name is refused by clients that check name constraints
    /// (webpki, browsers), so its key cannot impersonate other sites.
    pub fn for_hosts(name: &str, hosts: &[String]) -> Result<Self, TlsError> {
        Self::make(name, Some(name_constraints(hosts)))
    }

    fn make(name: &str, constraints: Option<NameConstraints>) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.name_constraints = constraints;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(this_year() + 10, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Ok(Self {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `hosts` (DNS names or IP addresses).
    pub fn server(&self, hosts: &[String]) -> Result<Pem, TlsError> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = dn(hosts.first().map(String::as_str).unwrap_or("localhost"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A device client certificate whose subject CN (and a URI SAN) is
    /// `name`, conventionally `<productId>:<dsn>`.
    pub fn client(&self, name: &str) -> Result<Pem, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<Pem, TlsError> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_after = rcgen::date_time_ymd(this_year() + 2, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Permit exactly the names in `hosts`; a kind of name (DNS, IP) that
/// `hosts` lacks is excluded as a whole, since a constraint on one kind
/// leaves the other unconstrained.
fn name_constraints(hosts: &[String]) -> NameConstraints {
    let mut permitted = Vec::new();
    let (mut dns, mut ip) = (false, false);
    for host in hosts {
        match host.parse::<IpAddr>() {
            Ok(addr) => {
                ip = true;
                let bits = if addr.is_ipv4() { 32 } else { 128 };
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                    addr, bits,
                )));
            }
            Err(_) => {
                dns = true;
                permitted.push(GeneralSubtree::DnsName(host.clone()));
            }
        }
    }
    let mut excluded = Vec::new();
    if !dns {
        // An empty DNS constraint matches every name (RFC 5280 4.2.1.10).
        excluded.push(GeneralSubtree::DnsName(String::new()));
    }
    if !ip {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])));
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])));
    }
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // A year's precision is all a validity end needs.
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

/// The SAN kinds used, for the summary `make-certs` prints.
pub fn san_kind(host: &str) -> &'static str {
    match host.parse::<IpAddr>() {
        Ok(_) => "IP",
        Err(_) => "DNS",
    }
}

/// Where [`write_bundle`] puts the CA's certificate and key, under `out`:
/// a directory of its own (mode 0700), which the companion's unit makes
/// inaccessible to the service, and which belongs offline once the
/// certificates are made.
pub const CA_DIR: &str = "ca";

/// What [`write_bundle`] and [`renew_server`] made, for the summary.
#[derive(Debug, Clone)]
pub struct Made {
    /// When the server certificate expires (YYYY-MM-DD, UTC).
    pub server_expires: String,
    /// When the CA expires (YYYY-MM-DD, UTC).
    pub ca_expires: String,
}

/// Refuse what is neither a host name (RFC 1123 labels: letters, digits,
/// hyphens, not at either end; 253 characters at most) nor an IP address:
/// a URL or `host:port` given as `--host` made a certificate no client
/// would ever match.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bare = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !bare.is_empty() && bare.len() <= 253 && bare.split('.').all(label_ok) {
        return Ok(());
    }
    let hint = if host.contains("://") || host.contains('/') {
        "give the bare name, without https:// or a path"
    } else if host.contains(':') {
        "give the name without :PORT (an IPv6 address goes without brackets)"
    } else {
        "a host name has letters, digits and hyphens in dot-separated labels (e.g. pi.local),          or give an IP address"
    };
    Err(format!(
        "`{host}` is neither a host name nor an IP address; {hint}"
    ))
}

fn io_error(file: &Path, e: std::io::Error) -> TlsError {
    TlsError::File {
        file: file.to_path_buf(),
        problem: e.to_string(),
        fix: "choose a directory you can write to with --out",
    }
}

/// Write `ca.crt`, `server.crt`, `server.key` (and a `device-<n>.crt/.key`
/// per device name) under `out`, and the CA's `ca.crt` and `ca.key` under
/// `out/`[`CA_DIR`]; keys get mode 0600. The CA is valid for `hosts` only.
/// Callers refuse to replace an existing CA unless told to (see
/// [`existing_ca`]): every phone and device that trusted it would break.
pub fn write_bundle(out: &Path, hosts: &[String], devices: &[String]) -> Result<Made, TlsError> {
    fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    let ca_dir = out.join(CA_DIR);
    kit::fsutil::ensure_private_dir(&ca_dir).map_err(|e| io_error(&ca_dir, e))?;
    let ca = LocalCa::for_hosts("avs-companion local CA", hosts)?;
    let mut files = vec![
        ("ca.crt".to_string(), ca.pem.cert.clone(), false),
        (format!("{CA_DIR}/ca.crt"), ca.pem.cert.clone(), false),
        (format!("{CA_DIR}/ca.key"), ca.pem.key.clone(), true),
    ];
    let made = sign_server_and_devices(&ca, hosts, devices, &mut files)?;
    write_files(out, files)?;
    Ok(made)
}

/// The CA files in `out` that [`write_bundle`] would replace.
pub fn existing_ca(out: &Path) -> Vec<std::path::PathBuf> {
    [out.join("ca.crt"), out.join(CA_DIR).join("ca.key")]
        .into_iter()
        .filter(|p| p.exists())
        .collect()
}

/// Sign a new `server.crt` and `server.key` (and device certificates)
/// with the CA in `ca_dir` (`ca.crt`, `ca.key`), leaving the CA and so
/// every phone and device that trusts it as they are. Every host must be
/// one the CA's name constraints permit.
pub fn renew_server(
    out: &Path,
    ca_dir: &Path,
    hosts: &[String],
    devices: &[String],
) -> Result<Made, TlsError> {
    let (cert_file, key_file) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|e| TlsError::File {
            file: p.to_path_buf(),
            problem: format!("cannot read the CA: {e}"),
            fix: "give the folder holding the CA's ca.crt and ca.key with --ca-dir                   (make-certs put them in OUT/ca)",
        })
    };
    let (cert_pem, key_pem) = (read(&cert_file)?, read(&key_file)?);
    let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::File {
        file: key_file.clone(),
        problem: format!("not a PEM private key: {e}"),
        fix: "give the ca.key that make-certs wrote beside ca.crt",
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| TlsError::File {
        file: cert_file.clone(),
        problem: format!("not a PEM CA certificate: {e}"),
        fix: "give the ca.crt that make-certs wrote beside ca.key",
    })?;
    let not_permitted: Vec<&String> = hosts.iter().filter(|h| !permits(&cert_pem, h)).collect();
    if let Some(h) = not_permitted.first() {
        return Err(TlsError::File {
            file: cert_file,
            problem: format!(
                "this CA may only sign the names it was made for, and {h} is not one of them"
            ),
            fix: "renew for the hosts the CA was made with, or make a new CA for all of them                   with --force (and trust its ca.crt again on every phone and device)",
        });
    }
    let ca = LocalCa {
        pem: Pem {
            cert: cert_pem,
            key: key_pem,
        },
        issuer,
    };
    fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    let mut files = Vec::new();
    let made = sign_server_and_devices(&ca, hosts, devices, &mut files)?;
    write_files(out, files)?;
    Ok(made)
}

/// Whether the name constraints of the CA in `ca_pem` permit `host`
/// (a CA without constraints permits every name).
fn permits(ca_pem: &str, host: &str) -> bool {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let ip = host.parse::<IpAddr>().ok();
    for ext in cert.extensions() {
        let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() else {
            continue;
        };
        let Some(permitted) = &nc.permitted_subtrees else {
            return true;
        };
        return permitted.iter().any(|sub| match (&sub.base, ip) {
            (GeneralName::DNSName(d), None) => {
                let (d, h) = (d.to_ascii_lowercase(), host.to_ascii_lowercase());
                h == d || h.ends_with(&format!(".{d}"))
            }
            (GeneralName::IPAddress(b), Some(ip)) => {
                // An address and its mask, each 4 or 16 bytes.
                let octets = match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                let n = octets.len();
                b.len() == 2 * n && (0..n).all(|i| octets[i] & b[n + i] == b[i] & b[n + i])
            }
            _ => false,
        });
    }
    true
}

type Files = Vec<(String, String, bool)>;

fn sign_server_and_devices(
    ca: &LocalCa,
    hosts: &[String],
    devices: &[String],
    files: &mut Files,
) -> Result<Made, TlsError> {
    let server = ca.server(hosts)?;
    let made = Made {
        server_expires: super::check::expiry(&server.cert).unwrap_or_default(),
        ca_expires: super::check::expiry(&ca.pem.cert).unwrap_or_default(),
    };
    files.push(("server.crt".to_string(), server.cert, false));
    files.push(("server.key".to_string(), server.key, true));
    for (i, name) in devices.iter().enumerate() {
        let dev = ca.client(name)?;
        files.push((format!("device-{}.crt", i + 1), dev.cert, false));
        files.push((format!("device-{}.key", i + 1), dev.key, true));
    }
    Ok(made)
}

fn write_files(out: &Path, files: Files) -> Result<(), TlsError> {
    for (name, text, private) in files {
        let path = out.join(name);
        if private {
            kit::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| io_error(&path, e))?;
        } else {
            write_public(&path, text.as_bytes()).map_err(|e| io_error(&path, e))?;
        }
    }
    Ok(())
}

fn write_public(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    kit::fsutil::write_atomic(path, data)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}
