//! The fleet's module: the module an operator last deployed or activated, recorded and read back.

use crate::db::{Tx, params};
use crate::time::Millis;
use crate::{CentralError, FleetModule};

/// Records the module the fleet runs (the one an operator last deployed or activated).
pub fn set_fleet_module(tx: &mut dyn Tx, m: &FleetModule, now: Millis) -> Result<(), CentralError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.encode(&m.bytes);
    tx.exec(
        "INSERT INTO fleet_module (name, version, sha256, bytes, signature, set_at) \
         VALUES ('active', $1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, \
           bytes = excluded.bytes, signature = excluded.signature, set_at = excluded.set_at",
        params![
            &m.version,
            &m.sha256,
            &bytes,
            m.signature.as_deref().unwrap_or_default(),
            now
        ],
    )?;
    Ok(())
}

/// The fleet's module's version and sha256, if one was recorded.
pub fn fleet_module_id(tx: &mut dyn Tx) -> Result<Option<(String, String)>, CentralError> {
    tx.query_opt(
        "SELECT version, sha256 FROM fleet_module WHERE name = 'active'",
        &[],
    )?
    .map(|r| Ok((r.text(0)?, r.text(1)?)))
    .transpose()
}

/// The fleet's module, if one was recorded.
pub fn fleet_module(tx: &mut dyn Tx) -> Result<Option<FleetModule>, CentralError> {
    use base64::Engine as _;
    let Some(r) = tx.query_opt(
        "SELECT version, sha256, bytes, signature FROM fleet_module WHERE name = 'active'",
        &[],
    )?
    else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r.text(2)?)
        .map_err(|e| CentralError::Decode(format!("the fleet's module: {e}")))?;
    Ok(Some(FleetModule {
        version: r.text(0)?,
        sha256: r.text(1)?,
        bytes,
        signature: Some(r.text(3)?).filter(|s| !s.is_empty()),
    }))
}
