//! Which release central's schema is at, and whether this binary may run against it or must
//! migrate it first (README, "Upgrades"). One number names a release: the binary's `--version`
//! and the schema it writes (`schema_release`, stamped by every migration run). A patch release
//! never changes a schema, so schemas record major.minor.

use std::fmt;

use crate::CentralError;

/// A release, as schemas record it: major.minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
}

impl Release {
    /// This binary's.
    pub fn this() -> Self {
        Self {
            major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
            minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
        }
    }

    /// `"0.5"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.trim().split_once('.')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Whether a process that opens central may change its schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchemaPolicy {
    /// Bring an older schema up to this release (needs DDL rights): the default, so that one
    /// command starts a fleet.
    #[default]
    Migrate,
    /// Never change the schema: refuse to start against one older than this release (an
    /// operator runs `cart-host migrate` first).
    Check,
}

/// What a database holds: the highest migration applied (0: none), and its `schema_release`
/// row (absent before release 0.5).
#[derive(Debug)]
pub(crate) struct Found {
    pub applied: i64,
    pub release: Option<(String, String)>,
}

/// What to do with central's schema.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Run this binary's migrations, then stamp its release.
    Migrate,
    /// Run against it as it is.
    Ready,
}

/// Decides from what central holds, the highest migration this binary knows, and the policy.
pub(crate) fn plan(found: &Found, known: i64, policy: SchemaPolicy) -> Result<Plan, CentralError> {
    let mine = Release::this();
    let this_binary = env!("CARGO_PKG_VERSION").to_owned();
    let release = match &found.release {
        None => None,
        Some((release, edges_from)) => {
            let unreadable = || {
                CentralError::Decode(format!(
                    "schema_release says {release:?}, edges from {edges_from:?}: not releases"
                ))
            };
            Some((
                Release::parse(release).ok_or_else(unreadable)?,
                Release::parse(edges_from).ok_or_else(unreadable)?,
            ))
        }
    };
    let newer = found.applied > known || release.is_some_and(|(r, _)| r > mine);
    match release {
        Some((central, edges_from)) if edges_from > mine => Err(CentralError::SchemaTooNew {
            central: central.to_string(),
            edges_from: edges_from.to_string(),
            mine: this_binary,
        }),
        // Migrations this binary does not know, and no release to say they are compatible.
        None if newer => Err(CentralError::SchemaTooNew {
            central: format!("of migration {}", found.applied),
            edges_from: "unknown".into(),
            mine: this_binary,
        }),
        _ if newer => Ok(Plan::Ready),
        Some((central, _)) if found.applied == known && central == mine => Ok(Plan::Ready),
        _ => match policy {
            SchemaPolicy::Migrate => Ok(Plan::Migrate),
            SchemaPolicy::Check => Err(CentralError::SchemaBehind {
                central: release.map_or_else(
                    || {
                        if found.applied == 0 {
                            "none yet".to_owned()
                        } else {
                            format!("before 0.5 (migration {})", found.applied)
                        }
                    },
                    |(r, _)| r.to_string(),
                ),
                mine: this_binary,
            }),
        },
    }
}

/// The highest migration a database has applied.
pub(crate) const APPLIED_SQL: &str =
    "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM refinery_schema_history";

/// The release a schema is at, and the oldest release that may run against it.
pub(crate) const RELEASE_SQL: &str = "SELECT release, edges_from FROM schema_release WHERE id = 1";

/// The highest migration this binary knows.
pub(crate) fn newest(runner: &refinery::Runner) -> i64 {
    runner
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Stamps this binary's release on a schema it has just migrated (never lowering it).
pub(crate) fn stamp_sql() -> String {
    let mine = Release::this();
    format!("UPDATE schema_release SET release = '{mine}' WHERE id = 1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(applied: i64, release: Option<(&str, &str)>) -> Found {
        Found {
            applied,
            release: release.map(|(r, e)| (r.to_owned(), e.to_owned())),
        }
    }

    #[test]
    fn a_schema_is_migrated_up_checked_or_refused() {
        let mine = Release::this().to_string();
        let next = format!("{}.{}", Release::this().major, Release::this().minor + 1);
        let known = 5;
        let migrate = SchemaPolicy::Migrate;
        let check = SchemaPolicy::Check;
        // Empty, or older than this release: migrated, or refused when this process may not.
        assert_eq!(
            plan(&found(0, None), known, migrate).unwrap(),
            Plan::Migrate
        );
        assert_eq!(
            plan(&found(4, None), known, migrate).unwrap(),
            Plan::Migrate
        );
        let behind = plan(&found(4, None), known, check).unwrap_err().to_string();
        assert!(
            behind.contains("before 0.5") && behind.contains("cart-host migrate"),
            "{behind}"
        );
        // This release's: ready either way.
        let same = found(known, Some((&mine, &mine)));
        assert_eq!(plan(&same, known, check).unwrap(), Plan::Ready);
        assert_eq!(plan(&same, known, migrate).unwrap(), Plan::Ready);
        // The next release's, additive: ready, and never migrated down.
        let additive = found(known + 1, Some((&next, &mine)));
        assert_eq!(plan(&additive, known, check).unwrap(), Plan::Ready);
        assert_eq!(plan(&additive, known, migrate).unwrap(), Plan::Ready);
        // The next release's, incompatible: refused, naming both releases.
        let breaking = found(known + 1, Some((&next, &next)));
        let refused = plan(&breaking, known, migrate).unwrap_err().to_string();
        assert!(
            refused.contains(&next) && refused.contains(&mine),
            "{refused}"
        );
        // Migrations unknown here and no release to vouch for them: refused.
        assert!(plan(&found(known + 1, None), known, migrate).is_err());
        assert!(plan(&found(known, Some(("zero", "0.1"))), known, migrate).is_err());
    }
}
