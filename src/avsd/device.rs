//! This device's identity: the serial number (DSN) it registers with.

use std::path::Path;

/// Where a Raspberry Pi's firmware publishes its serial number.
const PI_SERIAL: &str = "/proc/device-tree/serial-number";
/// Every systemd machine has one; unique per installation.
const MACHINE_ID: &str = "/etc/machine-id";

/// The configured serial, else the Pi's, else the machine id, else a fixed
/// fallback that at least names the problem.
pub fn serial(configured: Option<&str>) -> String {
    if let Some(s) = configured {
        return s.to_string();
    }
    read_id(Path::new(PI_SERIAL))
        .or_else(|| read_id(Path::new(MACHINE_ID)))
        .unwrap_or_else(|| "unknown-serial".to_string())
}

fn read_id(path: &Path) -> Option<String> {
    let raw = std::fs::read(path).ok()?;
    // The device tree string ends in NUL; machine-id in a newline.
    let text = String::from_utf8_lossy(&raw);
    let id = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_serial_wins_and_ids_are_trimmed() {
        assert_eq!(serial(Some("0001")), "0001");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("serial-number");
        std::fs::write(&p, b"10000000abcdef01\0").unwrap();
        assert_eq!(read_id(&p).as_deref(), Some("10000000abcdef01"));
        std::fs::write(&p, b"\n").unwrap();
        assert_eq!(read_id(&p), None);
    }
}
