//! How central's PostgreSQL is reached, as libpq's users expect: the URL's `sslmode` and
//! `sslrootcert` (TLS with rustls), the password from `PGPASSWORD` or a password file when the
//! URL has none, and URLs printed without their password.
//!
//! `sslmode`, as libpq reads it:
//!
//! - `disable`: no TLS;
//! - `allow`, `prefer` (the default): TLS if the server offers it, else plain;
//! - `require`: TLS or nothing;
//! - `verify-ca`: TLS, the server's certificate chained to a trusted root;
//! - `verify-full`: that, and the certificate names the host in the URL.
//!
//! The roots are `sslrootcert` (a PEM file, or `system` for the system's store), else
//! `~/.postgresql/root.crt`. As in libpq, `prefer` and `require` check the server's certificate
//! (as `verify-ca` does) only when a root file is given or found: otherwise they encrypt against
//! an eavesdropper but cannot tell the server from an impostor.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::CentralError;

/// A PostgreSQL URL made ready to connect: its configuration (password included) and TLS.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// None: encrypted, but the server is not known to be the one meant.
    Nothing,
    /// Chained to a trusted root.
    Chain,
    /// Chained, and naming the host connected to.
    ChainAndName,
}

/// `url` with its password, if any, replaced: for logs and errors.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL we can read: show its scheme only, in case it holds a secret.
        Err(_) => format!("{}...", url.split(':').next().unwrap_or("")),
    }
}

/// `url` with `password` set in it (percent-encoded), for a password read from a file.
pub fn with_password(url: &str, password: &str) -> Result<String, CentralError> {
    let mut parsed = url::Url::parse(url).map_err(|e| bad(url, e))?;
    parsed
        .set_password(Some(password))
        .map_err(|()| bad(url, "it has no host to log in to"))?;
    Ok(parsed.into())
}

fn bad(url: &str, why: impl std::fmt::Display) -> CentralError {
    CentralError::PostgresUrl {
        url: redacted(url),
        why: why.to_string(),
    }
}

/// Reads a `postgres://` URL: its TLS options (`sslmode`, `sslrootcert`) here, the rest as
/// tokio-postgres does, then the password from the environment if the URL has none.
pub(crate) fn target(url: &str) -> Result<Target, CentralError> {
    let mut parsed = url::Url::parse(url).map_err(|e| bad(url, e))?;
    let (mut mode, mut root) = ("prefer".to_owned(), None);
    let mut rest = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => mode = value.into_owned(),
            "sslrootcert" => root = Some(value.into_owned()),
            _ => rest.push((key.into_owned(), value.into_owned())),
        }
    }
    parsed.set_query(None);
    if !rest.is_empty() {
        parsed.query_pairs_mut().extend_pairs(&rest);
    }
    let mut config = tokio_postgres::Config::from_str(parsed.as_str()).map_err(|e| bad(url, e))?;
    let (ssl_mode, wanted) = match mode.as_str() {
        "disable" => (SslMode::Disable, Check::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::ChainAndName),
        other => {
            return Err(bad(
                url,
                format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ),
            ));
        }
    };
    config.ssl_mode(ssl_mode);
    let roots = roots(root.as_deref(), wanted != Check::Nothing).map_err(|e| bad(url, e))?;
    // With roots at hand, `prefer` and `require` check the chain too (as libpq does).
    let check = match (&roots, wanted) {
        (Some(_), Check::Nothing) => Check::Chain,
        _ => wanted,
    };
    if config.get_password().is_none()
        && let Some(password) = password_from_environment(&config)
    {
        config.password(password);
    }
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(client_config(roots, check).map_err(|e| bad(url, e))?),
    })
}

/// The trusted roots: `sslrootcert`'s, or `~/.postgresql/root.crt` when it exists; `None` when
/// neither is there and none is `needed`.
fn roots(given: Option<&str>, needed: bool) -> Result<Option<RootCertStore>, String> {
    let file = match given {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("sslrootcert=system: the system has no root certificates".into());
            }
            return Ok(Some(store));
        }
        Some(path) => PathBuf::from(path),
        None => match std::env::home_dir().map(|h| h.join(".postgresql/root.crt")) {
            Some(default) if default.exists() => default,
            _ if needed => {
                return Err("sslmode=verify-ca and verify-full need trusted roots: \
                     sslrootcert=PATH (a PEM file), sslrootcert=system, or ~/.postgresql/root.crt"
                    .into());
            }
            _ => return Ok(None),
        },
    };
    read_roots(&file)
        .map(Some)
        .map_err(|e| format!("sslrootcert {e}"))
}

/// The certificates in a PEM file, as trusted roots (for central's PostgreSQL, and the edges'
/// fleet CA); an error names the file.
pub fn read_roots(file: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    Ok(store)
}

fn client_config(roots: Option<RootCertStore>, check: Check) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let algorithms = provider.signature_verification_algorithms;
    let chain = match roots {
        Some(roots) if check != Check::Nothing => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            chain,
            name: check == Check::ChainAndName,
            algorithms,
        }))
        .with_no_client_auth())
}

/// The server's certificate, checked as far as `sslmode` asks. The handshake's signatures are
/// checked whatever the mode, so the session is at least encrypted to whoever answered.
#[derive(Debug)]
struct Verifier {
    /// The roots' verifier; `None`: any certificate (`prefer` and `require` without roots).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must name the host (`verify-full`), not just chain (`verify-ca`).
    name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The password for a URL that has none, as libpq finds it: `PGPASSWORD`, else the first
/// matching line of `PGPASSFILE` (default `~/.pgpass`), which is ignored if others may read it.
fn password_from_environment(config: &tokio_postgres::Config) -> Option<Vec<u8>> {
    if let Some(password) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
        return Some(password.into_encoded_bytes());
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".pgpass")))?;
    let meta = std::fs::metadata(&file).ok()?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} ignored: others may read it (chmod 0600 it)",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    pgpass_lookup(&text, [&host, &port, dbname, user]).map(String::into_bytes)
}

/// The password of the first `host:port:database:user:password` line matching `wanted`
/// (`*` matches anything; `\:` and `\\` are a colon and a backslash).
fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = pgpass_fields(line);
            let [host, port, db, user, password] = <[String; 5]>::try_from(fields).ok()?;
            [host, port, db, user]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want)
                .then_some(password)
        })
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut chars) = (Vec::new(), String::new(), line.chars());
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redacted("postgres://cart:s3cret@db.example:5432/cart?sslmode=verify-full"),
            "postgres://cart:***@db.example:5432/cart?sslmode=verify-full"
        );
        assert_eq!(
            redacted("postgres://cart@db/cart"),
            "postgres://cart@db/cart"
        );
        assert!(!redacted("postgres://cart:s3cret@[bad/cart").contains("s3cret"));
        let with = with_password("postgres://cart@db/cart", "p@ss:word/").expect("URL");
        let target = target(&with).expect("target");
        assert_eq!(target.config.get_password(), Some(&b"p@ss:word/"[..]));
        assert!(!redacted(&with).contains("p@ss"));
    }

    #[test]
    fn tls_options_are_read_here_and_the_rest_by_tokio_postgres() {
        let t = target("postgres://u@h/d?application_name=edge&sslmode=require").expect("ok");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("edge"));
        assert_eq!(
            target("postgres://u@h/d")
                .expect("ok")
                .config
                .get_ssl_mode(),
            SslMode::Prefer
        );
        let refused = |url: &str| match target(url) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{url} was taken"),
        };
        assert!(refused("postgres://u:pw@h/d?sslmode=verify-everything").contains("sslmode"));
        assert!(!refused("postgres://u:pw@h/d?sslmode=verify-everything").contains("pw@"));
        assert!(
            refused("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .contains("/nonexistent.pem")
        );
    }

    #[test]
    fn a_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\n\
                    other:5432:*:cart:no\n\
                    db\\:1:5432:*:cart:pa\\:ss\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, ["db:1", "5432", "cart", "cart"]).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, ["elsewhere", "5433", "x", "y"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("a:b:c\n", ["a", "b", "c", "d"]), None);
    }
}
