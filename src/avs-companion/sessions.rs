//! `avs-companion sessions list|revoke`: the operator's view of the device
//! sessions in the database, read and changed directly (SQLite in WAL mode
//! lets the running service carry on meanwhile).

use std::process::ExitCode;

use super::cli::SessionsAction;
use super::config::CompanionConfig;
use super::store::{Status, Store};

/// Run a `sessions` subcommand; prints what it did, or why it could not.
pub fn main(config: &CompanionConfig, action: &SessionsAction) -> ExitCode {
    let path = config.database_path();
    if config.storage.url.is_none() && !path.is_file() {
        eprintln!(
            "avs-companion sessions: no database at {}; fix: run this as the service user with the \
             service's config (and STATE_DIRECTORY, if the unit sets it), after the service has started once",
            path.display()
        );
        return ExitCode::from(1);
    }
    let store = match super::store::open(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("avs-companion sessions: {e}");
            return ExitCode::from(1);
        }
    };
    let store = store.as_ref();
    let result = match action {
        SessionsAction::List => list(store),
        SessionsAction::Revoke {
            product: Some(product),
            serial: Some(serial),
            id: None,
        } => store
            .revoke_device(product, serial)
            .map_err(|e| e.to_string())
            .and_then(|n| {
                if n == 0 {
                    return Err(format!(
                        "no pending or linked session of product {product:?} serial {serial:?}; \
                         fix: check both with `avs-companion sessions list`"
                    ));
                }
                println!("revoked {n} session(s) of {product} {serial}");
                Ok(())
            }),
        SessionsAction::Revoke { id: Some(id), .. } => revoke_short(store, id),
        SessionsAction::Revoke { .. } => {
            Err("give PRODUCT SERIAL, or --id SHORT_ID from `sessions list`".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avs-companion sessions: {e}");
            ExitCode::from(1)
        }
    }
}

fn list(store: &dyn Store) -> Result<(), String> {
    let rows = store.list().map_err(|e| e.to_string())?;
    println!(
        "{:<10}  {:<24}  {:<16}  {:<8}  {:<20}  {:<20}",
        "ID", "PRODUCT", "SERIAL", "STATUS", "CREATED (UTC)", "LAST CHANGED (UTC)"
    );
    for r in &rows {
        println!(
            "{:<10}  {:<24}  {:<16}  {:<8}  {:<20}  {:<20}",
            r.short_id,
            https::http::loggable(&r.product_id),
            https::http::loggable(&r.dsn),
            r.status.name(),
            utc(r.created_at),
            utc(r.updated_at)
        );
    }
    println!("{} session(s)", rows.len());
    Ok(())
}

fn revoke_short(store: &dyn Store, prefix: &str) -> Result<(), String> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--id {prefix:?}: give at least 4 hex digits of an ID from `sessions list`"
        ));
    }
    let ids = store.ids_by_short_id(&prefix).map_err(|e| e.to_string())?;
    match ids.as_slice() {
        [] => Err(format!(
            "no session has an ID starting with {prefix}; fix: copy one from `sessions list`"
        )),
        [id] => {
            store
                .end(id.expose(), Status::Revoked)
                .map_err(|e| e.to_string())?;
            println!("revoked session {prefix}");
            Ok(())
        }
        more => Err(format!(
            "{} sessions have an ID starting with {prefix}; fix: give more digits",
            more.len()
        )),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS`, or `-` when unknown.
fn utc(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), for a date without a
    // date crate.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_utc() {
        assert_eq!(super::utc(0), "-");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_764_902_096), "2025-12-05 02:34:56");
    }
}
