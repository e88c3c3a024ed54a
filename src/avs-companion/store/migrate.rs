//! Versioned schema migrations with refinery, one list per backend. A
//! migration is never edited once released (refinery keeps its checksum in
//! `refinery_schema_history` and refuses a database whose applied migration
//! differs); a schema change is a new `V<n>__<what>.sql` in both lists.

use refinery::{Migrate, Migration, Runner};

use super::StoreError;

/// A backend's migrations: (refinery name, SQL), oldest first.
pub(super) type List = &'static [(&'static str, &'static str)];

/// SQLite's migrations.
pub(super) const SQLITE: List = &[
    (
        "V1__baseline",
        include_str!("migrations/sqlite/V1__baseline.sql"),
    ),
    (
        "V2__token_versions_and_refresh_leases",
        include_str!("migrations/sqlite/V2__token_versions_and_refresh_leases.sql"),
    ),
    (
        "V3__key_checks",
        include_str!("migrations/sqlite/V3__key_checks.sql"),
    ),
];

/// PostgreSQL's migrations: the same versions and meaning as [`SQLITE`].
pub(super) const POSTGRES: List = &[
    (
        "V1__baseline",
        include_str!("migrations/postgres/V1__baseline.sql"),
    ),
    (
        "V2__token_versions_and_refresh_leases",
        include_str!("migrations/postgres/V2__token_versions_and_refresh_leases.sql"),
    ),
    (
        "V3__key_checks",
        include_str!("migrations/postgres/V3__key_checks.sql"),
    ),
];

/// Where a database's schema stands against this program's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Every migration this program knows is applied.
    Current(i64),
    /// Migrations are missing (`at`: the newest applied, if any); opening
    /// the store applies them.
    Behind {
        /// The newest applied version, if any.
        at: Option<i64>,
        /// This program's newest version.
        want: i64,
    },
    /// A newer program migrated the database: this one must not touch it.
    Ahead {
        /// The newest applied version.
        at: i64,
        /// This program's newest version.
        knows: i64,
    },
}

impl SchemaState {
    /// The state in words, for `--check-config` and errors.
    pub fn describe(&self) -> String {
        match self {
            SchemaState::Current(v) => format!("schema version {v}, current"),
            SchemaState::Behind { at: None, want } => {
                format!(
                    "no schema yet (migrations 1 to {want} are applied when the service starts)"
                )
            }
            SchemaState::Behind { at: Some(at), want } => format!(
                "schema version {at}, migrations {} to {want} missing (applied when the service starts)",
                at + 1
            ),
            SchemaState::Ahead { at, knows } => format!(
                "schema version {at} is newer than this avs-companion knows ({knows}): a newer \
                 version migrated the database"
            ),
        }
    }
}

fn migrations(list: List) -> Vec<Migration> {
    list.iter()
        .map(|(name, sql)| {
            // The names are constants checked by the store tests.
            Migration::unapplied(name, sql).unwrap_or_else(|e| panic!("migration {name}: {e}"))
        })
        .collect()
}

fn runner(list: List) -> Runner {
    Runner::new(&migrations(list))
}

/// This program's newest schema version for `list`.
pub(super) fn latest(list: List) -> i64 {
    migrations(list)
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// refinery's history table, which it makes on its first run.
pub(super) const HISTORY: &str = "refinery_schema_history";

/// Where `conn`'s schema stands; `has_history`: whether [`HISTORY`]
/// exists (refinery only reads it once it has made it).
pub(super) fn state<C: Migrate>(
    list: List,
    conn: &mut C,
    has_history: bool,
) -> Result<SchemaState, refinery::Error> {
    let want = latest(list);
    let at = if has_history {
        runner(list)
            .get_last_applied_migration(conn)?
            .map(|m| i64::from(m.version()))
    } else {
        None
    };
    Ok(match at {
        Some(at) if at > want => SchemaState::Ahead { at, knows: want },
        Some(at) if at == want => SchemaState::Current(at),
        at => SchemaState::Behind { at, want },
    })
}

/// Apply what is missing; refuse a database a newer program migrated.
/// `what` names the database in errors.
pub(super) fn run<C: Migrate>(
    list: List,
    conn: &mut C,
    has_history: bool,
    what: &str,
) -> Result<(), StoreError> {
    let schema = |message: String, fix: &str| StoreError::Schema {
        what: what.to_string(),
        message,
        fix: fix.to_string(),
    };
    let st = state(list, conn, has_history).map_err(|e| {
        schema(
            format!("cannot read the schema history: {e}"),
            "check that the database user may read and create tables",
        )
    })?;
    if let SchemaState::Ahead { .. } = st {
        return Err(schema(
            st.describe(),
            "run the avs-companion version that migrated it (or a newer one); restore a backup \
             to go back",
        ));
    }
    if let SchemaState::Behind { at, want } = st {
        runner(list).run(conn).map_err(|e| {
            schema(
                format!("cannot migrate the schema to version {want}: {e}"),
                "check that the database user owns the tables (it creates and alters them); \
                 the database was left at its old version",
            )
        })?;
        tracing::info!(
            database = what,
            from = at.unwrap_or(0),
            to = want,
            "schema migrated"
        );
    }
    Ok(())
}
