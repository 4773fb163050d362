//! TLS for the edge and for whatever talks to edges, with rustls.
//!
//! - **HTTPS**: the edge's certificate and key are PEM files, read again when either changes
//!   (looked at every [`RELOAD_EVERY`]) or on `SIGHUP`. New connections get the new certificate;
//!   open ones keep theirs, so nothing is dropped. A file that does not read, or a key that does
//!   not match its certificate, is logged and the last good pair kept.
//! - **The fleet CA**: peer requests (forwarding, hand-off, the dashboard's fan-out) use mutual
//!   TLS. The serving edge asks every client for a certificate; shoppers present none and are
//!   served as before, but a request that claims to come from a peer is taken as one only over
//!   a connection that presented a certificate chained to the fleet CA, which is checked before
//!   the fleet secret is even read ([`crate::fleet::Fleet::admits`]). A certificate that does
//!   not chain to it fails the handshake. The calling edge presents its own certificate (so it
//!   must allow client authentication as well as server authentication) and checks the peer's
//!   against the same CA.
//! - **Commands** that talk to edges check the edges' certificates against the fleet CA when
//!   given one, else against the system's roots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::locks;

/// How often the certificate's files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Where an edge's TLS comes from (`serve --tls-cert --tls-key [--fleet-ca]`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, PEM, this edge's own first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs the fleet's edges' certificates; with it, peer requests need one.
    pub fleet_ca: Option<PathBuf>,
}

/// An edge's TLS: what it serves with, and how it calls its peers.
pub struct EdgeTls {
    identity: Arc<Identity>,
    server: Arc<ServerConfig>,
    peers: Arc<ClientConfig>,
    fleet_ca: bool,
}

impl EdgeTls {
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let provider = provider();
        let identity = Arc::new(Identity::load(&files.cert, &files.key)?);
        let roots = files
            .fleet_ca
            .as_deref()
            .map(|ca| read_roots(ca).with_context(|| format!("the fleet CA {}", ca.display())))
            .transpose()?
            .map(Arc::new);
        let verifier = match &roots {
            Some(roots) => WebPkiClientVerifier::builder_with_provider(
                Arc::clone(roots),
                Arc::clone(&provider),
            )
            .allow_unauthenticated()
            .build()
            .context("the fleet CA")?,
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::clone(&identity) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let peers = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(match roots {
                Some(roots) => roots,
                None => system_roots(),
            })
            .with_client_cert_resolver(Arc::clone(&identity) as Arc<dyn ResolvesClientCert>);
        Ok(Self {
            identity,
            server: Arc::new(server),
            peers: Arc::new(peers),
            fleet_ca: files.fleet_ca.is_some(),
        })
    }

    /// Accepts TLS connections with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.server))
    }

    /// How this edge calls its peers: their certificates checked, its own presented.
    pub fn peers(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.peers)
    }

    /// Whether a peer request needs a fleet certificate.
    pub fn checks_peers(&self) -> bool {
        self.fleet_ca
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// On a request whose connection presented a certificate chained to the fleet CA.
#[derive(Clone, Copy, Debug)]
pub struct FleetCertificate;

/// A certificate and its key as last read from their files.
#[derive(Debug)]
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

/// The files' modification times, to tell when they changed.
type Stamp = [Option<SystemTime>; 2];

impl Identity {
    fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let stamp = stamp(cert, key);
        let loaded = certified_key(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new((Arc::new(loaded), stamp)),
        })
    }

    /// Reads the files again if they changed since they were last read (or always, with
    /// `force`): `Ok(true)` when a new certificate is in use. On an error the one in use stays.
    pub fn reload(&self, force: bool) -> anyhow::Result<bool> {
        let stamp = stamp(&self.cert, &self.key);
        if !force && locks::read(&self.current).1 == stamp {
            return Ok(false);
        }
        let loaded = certified_key(&self.cert, &self.key);
        let mut current = locks::write(&self.current);
        // A failed read is not tried again until the files change again.
        current.1 = stamp;
        current.0 = Arc::new(loaded?);
        Ok(true)
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&locks::read(&self.current).0)
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _issuers: &[&[u8]],
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let current = self.current();
        current
            .key
            .choose_scheme(schemes)
            .is_some()
            .then_some(current)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key].map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
}

fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the certificate file {} holds no certificate",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    CertifiedKey::from_der(chain, private, &provider()).with_context(|| {
        format!(
            "the key {} with the certificate {}",
            key.display(),
            cert.display()
        )
    })
}

/// The certificates in a PEM file, as trusted roots.
fn read_roots(file: &Path) -> anyhow::Result<RootCertStore> {
    cart_central::read_roots(file).map_err(anyhow::Error::msg)
}

/// The system's trusted roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Arc::new(store)
    }))
}

/// A client that checks servers against `ca` (a PEM file), or the system's roots without one,
/// and presents no certificate: for the commands that talk to edges.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = match ca {
        Some(ca) => Arc::new(read_roots(ca)?),
        None => system_roots(),
    };
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
