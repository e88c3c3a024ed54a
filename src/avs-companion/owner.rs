//! Run by hand as root (`sudo avs-companion`), the companion would create
//! its database, `-wal` and `-shm` files owned by root in the service's
//! state directory, and the service user could then no longer write them.
//! Root is refused where the files belong to someone else, and warned
//! where they belong to root.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What running as this user does to the database's ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to say: not root.
    Fine,
    /// Root, and what it would write already belongs to root.
    Warn(String),
    /// Root, where another user owns the database or its folder.
    Refuse(String),
}

/// Decide for effective user `euid` and the database at `db`; `owner`
/// gives a path's owner (uid), or `None` if it does not exist.
pub fn decide(euid: u32, db: &Path, owner: impl Fn(&Path) -> Option<u32>) -> Verdict {
    if euid != 0 {
        return Verdict::Fine;
    }
    let dir = db.parent().unwrap_or(Path::new("/"));
    let (what, uid) = match (owner(db), owner(dir)) {
        (Some(uid), _) => (db, uid),
        (None, Some(uid)) => (dir, uid),
        (None, None) => {
            return Verdict::Warn(format!(
                "running as root: {} will be created owned by root, and the service user \
                 cannot write it then; fix: run the service with `systemctl start avs-companion` \
                 (or as its user: `sudo -u avs-companion avs-companion …`)",
                db.display()
            ));
        }
    };
    let name = user_name(uid);
    if uid != 0 {
        return Verdict::Refuse(format!(
            "running as root, but {} belongs to {name}: files root makes there (the database and \
             its -wal and -shm files) would lock {name} out; fix: run it as {name}: \
             `sudo -u {name} avs-companion …`, or start the service: `systemctl start avs-companion`",
            what.display()
        ));
    }
    Verdict::Warn(format!(
        "running as root: {} belongs to root, so the service user cannot use it; fix: run \
         avs-companion as the service user (`systemctl start avs-companion`), and hand the files \
         over with `chown -R avs-companion: {}`",
        what.display(),
        dir.display()
    ))
}

/// The verdict for this process.
pub fn check(db: &Path) -> Verdict {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    decide(euid, db, |p| std::fs::metadata(p).ok().map(|m| m.uid()))
}

/// The user name of `uid` from /etc/passwd, or `uid N`.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(db: Option<u32>, dir: Option<u32>) -> impl Fn(&Path) -> Option<u32> {
        move |p| if p.ends_with("c.sqlite3") { db } else { dir }
    }

    #[test]
    fn only_root_is_judged() {
        let db = Path::new("/var/lib/x/c.sqlite3");
        assert_eq!(decide(1000, db, owners(Some(0), Some(0))), Verdict::Fine);
    }

    #[test]
    fn root_is_refused_where_another_user_owns_the_database_or_its_folder() {
        let db = Path::new("/var/lib/x/c.sqlite3");
        for (file, dir) in [
            (Some(65534), Some(65534)),
            (None, Some(65534)),
            (Some(65534), Some(0)),
        ] {
            match decide(0, db, owners(file, dir)) {
                Verdict::Refuse(m) => assert!(m.contains("sudo -u"), "{m}"),
                other => panic!("{file:?} {dir:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn root_is_warned_where_root_owns_them_or_nothing_exists() {
        let db = Path::new("/var/lib/x/c.sqlite3");
        for (file, dir) in [(Some(0), Some(0)), (None, Some(0)), (None, None)] {
            match decide(0, db, owners(file, dir)) {
                Verdict::Warn(m) => assert!(m.starts_with("running as root"), "{m}"),
                other => panic!("{file:?} {dir:?}: {other:?}"),
            }
        }
    }
}
