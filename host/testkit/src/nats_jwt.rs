//! NATS's decentralised credentials, made in the test as `nsc` makes them: an operator, the
//! accounts it signs (JetStream enabled), and users' `.creds` files signed by an account. A
//! server in operator mode ([`crate::Nats::start_operated`]) trusts the operator and knows the
//! accounts from its configuration (the memory resolver), so that a user signed by any other
//! account is refused.
//!
//! A JWT here is what the NATS JWT library (v2) writes: a header naming `ed25519-nkey`, the
//! claims, and an Ed25519 signature by the issuer's nkey, each base64url without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator: the root every account is signed by.
pub struct Operator {
    key: KeyPair,
    name: String,
    /// The system account, which a server in operator mode wants named.
    pub system: Account,
}

/// An account: a namespace of subjects and streams, and the issuer of its users.
pub struct Account {
    key: KeyPair,
    /// The account's JWT, signed by its operator.
    pub jwt: String,
}

impl Operator {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::new_operator();
        let system = Account::signed_by(&key, "SYS", false)?;
        Ok(Self {
            key,
            name: name.to_owned(),
            system,
        })
    }

    /// The operator's own JWT, self-signed, naming the system account.
    pub fn jwt(&self) -> anyhow::Result<String> {
        let operator = self.key.public_key();
        encode(
            &self.key,
            &operator,
            &self.name,
            json!({
                "type": "operator",
                "version": 2,
                "system_account": self.system.key.public_key(),
            }),
        )
    }

    /// A new account of this operator's, with JetStream enabled and no other limit.
    pub fn account(&self, name: &str) -> anyhow::Result<Account> {
        Account::signed_by(&self.key, name, true)
    }

    /// The server configuration that trusts this operator and knows these accounts (and the
    /// system account), with the operator's JWT in the file `operator_jwt`.
    pub fn server_config(&self, operator_jwt: &std::path::Path, accounts: &[&Account]) -> String {
        let preload: String = std::iter::once(&self.system)
            .chain(accounts.iter().copied())
            .map(|a| format!("  {}: \"{}\"\n", a.key.public_key(), a.jwt))
            .collect();
        format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
            operator_jwt.display(),
            self.system.key.public_key(),
        )
    }
}

impl Account {
    fn signed_by(operator: &KeyPair, name: &str, jetstream: bool) -> anyhow::Result<Self> {
        let key = KeyPair::new_account();
        let storage = if jetstream { -1 } else { 0 };
        let jwt = encode(
            operator,
            &key.public_key(),
            name,
            json!({
                "type": "account",
                "version": 2,
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": storage, "disk_storage": storage,
                    "streams": -1, "consumer": -1,
                },
                "default_permissions": { "pub": {}, "sub": {} },
            }),
        )?;
        Ok(Self { key, jwt })
    }

    /// A `.creds` file's text for a new user of this account, allowed everything the account is.
    pub fn user_creds(&self, name: &str) -> anyhow::Result<String> {
        let user = KeyPair::new_user();
        let jwt = encode(
            &self.key,
            &user.public_key(),
            name,
            json!({
                "type": "user",
                "version": 2,
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            }),
        )?;
        let seed = user.seed()?;
        Ok(format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ))
    }
}

/// A JWT of `nats` claims about `subject`, signed by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> anyhow::Result<String> {
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let claims = json!({
        "jti": hex_id(),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes())?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// A JWT's id: unique, which is all the server asks of it.
fn hex_id() -> String {
    use rand::Rng as _;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
