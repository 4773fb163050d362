//! Ids and secrets: random cart ids and tokens, and the token hash the guest compares.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// `prefix_` and 32 hex digits of randomness.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// A cart token: 256 random bits, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the guest stores and compares instead of the token itself.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a secret someone gave is the expected one. Compares digests, so the time taken says
/// nothing about the secret.
pub fn same_secret(given: &[u8], expected: &str) -> bool {
    Sha256::digest(given) == Sha256::digest(expected.as_bytes())
}

/// Whether `s` could be an id made by [`new_id`] with this prefix.
pub fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hexits| hexits.len() == 32 && hexits.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shape() {
        let id = new_id("c");
        assert!(is_id(&id, "c"), "{id}");
        assert!(!is_id(&id, "g"));
        assert!(!is_id("c_../../etc", "c"));
        assert_ne!(new_token(), new_token());
        assert_eq!(token_hash("x").len(), 64);
    }
}
