//! The throwaway CA every TLS test starts from: a CA and a server
//! certificate it signed for 127.0.0.1 and localhost, written where the
//! programs under test read them.

use std::path::{Path, PathBuf};

use https::certs::LocalCa;

/// A test's CA and its server certificate, as files.
pub struct TestCa {
    /// The CA, to sign more (client certificates, other servers).
    pub ca: LocalCa,
    /// `ca.crt`: what clients trust.
    pub ca_file: PathBuf,
    /// `server.crt`: the server's certificate.
    pub cert_file: PathBuf,
    /// `server.key`: its private key.
    pub key_file: PathBuf,
}

impl TestCa {
    /// Make a CA named `name` and write `ca.crt`, `server.crt` and
    /// `server.key` into `dir`. Installs the TLS provider first, since
    /// every user of the files goes on to set up TLS.
    pub fn write(dir: &Path, name: &str) -> TestCa {
        https::install_provider();
        let ca = LocalCa::new(name).expect("test CA");
        let server = ca
            .server(&["127.0.0.1".into(), "localhost".into()])
            .expect("server certificate");
        let p = |n: &str| dir.join(n);
        std::fs::write(p("ca.crt"), &ca.pem.cert).expect("write ca.crt");
        std::fs::write(p("server.crt"), &server.cert).expect("write server.crt");
        std::fs::write(p("server.key"), &server.key).expect("write server.key");
        TestCa {
            ca,
            ca_file: p("ca.crt"),
            cert_file: p("server.crt"),
            key_file: p("server.key"),
        }
    }
}
