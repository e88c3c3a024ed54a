//! avsctl's exit codes, one place for the program, its `--help` and the
//! tests, so a script can tell "avsd is not running" from "avsd said no"
//! from "it went wrong".

/// The command did what it was asked.
pub const OK: u8 = 0;
/// The request was made but did not work: a login that failed, avsd
/// leaving the bus while avsctl waited, an unexpected bus error.
pub const FAILED: u8 = 1;
/// avsctl was called wrongly (an unknown command, a bad volume).
pub const USAGE: u8 = 2;
/// avsd cannot be reached: it is not running, or there is no system bus.
pub const NOT_RUNNING: u8 = 3;
/// The bus refused the call: only root and group avsd may do this.
pub const DENIED: u8 = 4;
/// avsd refused the request and said why (`org.avsd.Avs1.Error.*`: not
/// logged in, not connected, busy, not configured, no audio device).
pub const REFUSED: u8 = 5;

/// The table printed under `avsctl --help` and in the manual.
pub const HELP: &str = "\
Exit status:
  0  done
  1  failed: the request was made but did not work (see the message)
  2  usage error
  3  avsd is not running (or there is no system bus)
  4  permission denied: only root and group avsd (buttons: or whom polkit allows)
  5  refused by avsd, which says why (for example: not logged in)";

/// The exit code for a D-Bus error name.
pub fn for_error_name(name: &str) -> u8 {
    match name {
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => NOT_RUNNING,
        "org.freedesktop.DBus.Error.AccessDenied" | "org.avsd.Avs1.Error.NotPermitted" => DENIED,
        n if n.starts_with("org.avsd.Avs1.Error.") => REFUSED,
        _ => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_map_to_distinct_codes_and_the_help_lists_each() {
        assert_eq!(
            for_error_name("org.freedesktop.DBus.Error.ServiceUnknown"),
            NOT_RUNNING
        );
        assert_eq!(
            for_error_name("org.freedesktop.DBus.Error.AccessDenied"),
            DENIED
        );
        assert_eq!(for_error_name("org.avsd.Avs1.Error.NotAuthorized"), REFUSED);
        assert_eq!(for_error_name("org.avsd.Avs1.Error.NotPermitted"), DENIED);
        assert_eq!(for_error_name("org.freedesktop.DBus.Error.Failed"), FAILED);
        for code in [OK, FAILED, USAGE, NOT_RUNNING, DENIED, REFUSED] {
            assert!(
                HELP.contains(&format!("\n  {code}  ")),
                "{code} missing from:\n{HELP}"
            );
        }
    }
}
