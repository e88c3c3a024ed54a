//! DNS that fails on demand: avsd runs in its own mount namespace where
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/nsswitch.conf` are files of
//! the test's. Name lookups go to the hosts file, then to a name server
//! that does not exist (192.0.2.1, a documentation address, one 1 s try),
//! so taking a name out of the hosts file makes its lookup fail the way a
//! dead resolver does: "Temporary failure in name resolution".
//!
//! A mount namespace needs root: the wrapper runs `unshare --mount` as
//! root, or through `sudo -n` and then back to the test's user with
//! `setpriv`, so avsd always runs as the user the test runs as.

use std::io::Write;
use std::path::PathBuf;

/// Sets up the namespace, then execs its remaining arguments.
const JAIL: &str = r#"#!/bin/sh
# jail HOSTS RESOLV NSSWITCH UID GID PROGRAM [ARGS...]
set -e
hosts=$1 resolv=$2 nss=$3 uid=$4 gid=$5
shift 5
mount --bind "$hosts" /etc/hosts
mount --bind "$resolv" /etc/resolv.conf
mount --bind "$nss" /etc/nsswitch.conf
for cache in /run/nscd /var/run/nscd; do
  if [ -d "$cache" ]; then mount -t tmpfs nscd "$cache"; fi
done
if [ "$uid" = "$(id -u)" ]; then exec "$@"; fi
exec setpriv --reuid="$uid" --regid="$gid" --init-groups --pdeathsig=KILL "$@"
"#;

/// The files behind avsd's name lookups and the wrapper that puts them in
/// place.
pub struct DnsJail {
    hosts: PathBuf,
    /// Give to [`crate::Daemon::start_wrapped`].
    pub wrapper: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Default for DnsJail {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsJail {
    /// The files, with `localhost` resolving to 127.0.0.1.
    pub fn new() -> DnsJail {
        let dir = tempfile::Builder::new()
            .prefix("avsd-dns")
            .tempdir()
            .unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let jail = file("jail.sh", JAIL);
        let hosts = file("hosts", "");
        let resolv = file(
            "resolv.conf",
            "nameserver 192.0.2.1\noptions timeout:1 attempts:1\n",
        );
        let nss = file("nsswitch.conf", "hosts: files dns\n");
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut wrapper = Vec::new();
        if uid != 0 {
            let sudo = std::process::Command::new("sudo")
                .args(["-n", "true"])
                .status();
            assert!(
                sudo.is_ok_and(|s| s.success()),
                "making DNS fail for avsd needs a mount namespace: run the tests as \
                 root or with password-less sudo"
            );
            wrapper.extend(["sudo", "-n", "-E"].map(String::from));
        }
        wrapper.extend(["unshare", "--mount", "sh"].map(String::from));
        wrapper.extend([
            jail,
            hosts.clone(),
            resolv,
            nss,
            uid.to_string(),
            gid.to_string(),
        ]);
        let jail = DnsJail {
            hosts: PathBuf::from(hosts),
            wrapper,
            _dir: dir,
        };
        jail.resolve(true);
        jail
    }

    /// Whether `localhost` resolves. The hosts file is rewritten in place:
    /// the bind mount holds on to its inode.
    pub fn resolve(&self, on: bool) {
        let text = if on {
            "127.0.0.1 localhost\n"
        } else {
            "# the name server is down\n"
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.hosts)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}
