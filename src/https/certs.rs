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

/// Write `ca.crt`, `server.crt`, `server.key` (and a `device-<n>.crt/.key`
/// per device name) under `out`, and the CA's `ca.crt` and `ca.key` under
/// `out/`[`CA_DIR`]; keys get mode 0600. The CA is valid for `hosts` only.
pub fn write_bundle(out: &Path, hosts: &[String], devices: &[String]) -> Result<(), TlsError> {
    let io = |file: &Path, e: std::io::Error| TlsError::File {
        file: file.to_path_buf(),
        problem: e.to_string(),
        fix: "choose a directory you can write to with --out",
    };
    fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let ca_dir = out.join(CA_DIR);
    kit::fsutil::ensure_private_dir(&ca_dir).map_err(|e| io(&ca_dir, e))?;
    let ca = LocalCa::for_hosts("avs-companion local CA", hosts)?;
    let server = ca.server(hosts)?;
    let mut files = vec![
        ("ca.crt".to_string(), ca.pem.cert.clone(), false),
        (format!("{CA_DIR}/ca.crt"), ca.pem.cert.clone(), false),
        (format!("{CA_DIR}/ca.key"), ca.pem.key.clone(), true),
        ("server.crt".to_string(), server.cert, false),
        ("server.key".to_string(), server.key, true),
    ];
    for (i, name) in devices.iter().enumerate() {
        let dev = ca.client(name)?;
        files.push((format!("device-{}.crt", i + 1), dev.cert, false));
        files.push((format!("device-{}.key", i + 1), dev.key, true));
    }
    for (name, text, private) in files {
        let path = out.join(name);
        if private {
            kit::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| io(&path, e))?;
        } else {
            write_public(&path, text.as_bytes()).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

fn write_public(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    kit::fsutil::write_atomic(path, data)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}
