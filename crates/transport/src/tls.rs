//! TLS for `wss://` relays (rustls with the *ring* provider), and the relay key pin.
//!
//! The relay's certificate is verified as usual against the configured roots (Mozilla's,
//! compiled in; the operating system's; or a CA file for a self-hosted CA), and then its key is
//! compared with the one pinned on first use. The pin is the SHA-256 of the certificate's
//! `SubjectPublicKeyInfo`, not of the whole certificate: a renewal that keeps the key (certbot
//! `--reuse-key`, or a self-hosted CA re-issuing) passes; a new key is refused until the user
//! accepts it, like a changed relay id.

use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::error::ClientError;

/// Which certificate authorities a `wss://` relay's certificate must chain to.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrustRoots {
    /// Mozilla's root program, compiled in (`webpki-roots`): the same on every machine.
    #[default]
    WebPki,
    /// The operating system's certificate store.
    System,
    /// Only the CAs in this PEM file (a self-hosted CA), read when the connection is made.
    CaPem(Vec<u8>),
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WebPki => f.write_str("WebPki"),
            Self::System => f.write_str("System"),
            Self::CaPem(p) => write!(f, "CaPem({} bytes)", p.len()),
        }
    }
}

/// SHA-256 of a relay certificate's `SubjectPublicKeyInfo` (its public key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyPin(pub [u8; 32]);

impl KeyPin {
    /// The pin of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Result<Self, ClientError> {
        let cert = CertificateDer::from(der);
        let ee = webpki::EndEntityCert::try_from(&cert)
            .map_err(|_| ClientError::Tls("the relay's certificate does not parse".into()))?;
        let spki = ee.subject_public_key_info();
        Ok(Self(Sha256::digest(spki.as_ref()).into()))
    }

    /// Hex, as users compare it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for KeyPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl std::fmt::Debug for KeyPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPin({self})")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_with(roots: RootCertStore) -> Result<Arc<ClientConfig>, ClientError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls configuration for `roots` (Mozilla's and the system's are built once per process).
pub fn client_config(roots: &TrustRoots) -> Result<Arc<ClientConfig>, ClientError> {
    static WEBPKI: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static SYSTEM: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    match roots {
        TrustRoots::WebPki => {
            if let Some(c) = WEBPKI.get() {
                return Ok(c.clone());
            }
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let c = config_with(store)?;
            Ok(WEBPKI.get_or_init(|| c).clone())
        }
        TrustRoots::System => {
            if let Some(c) = SYSTEM.get() {
                return Ok(c.clone());
            }
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ClientError::Tls(
                    "no usable certificate in the system's store".into(),
                ));
            }
            let c = config_with(store)?;
            Ok(SYSTEM.get_or_init(|| c).clone())
        }
        TrustRoots::CaPem(pem) => config_with(ca_store(pem)?),
    }
}

/// The roots in a PEM file (one or more `CERTIFICATE` blocks).
pub fn ca_store(pem: &[u8]) -> Result<RootCertStore, ClientError> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| ClientError::CaFile("not a PEM certificate file".into()))?;
        store
            .add(cert)
            .map_err(|e| ClientError::CaFile(format!("unusable CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(ClientError::CaFile("no certificate in the file".into()));
    }
    Ok(store)
}

/// The server name to verify for `host` (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|_| ClientError::Url(format!("{host:?} is not a valid host name")))
}

/// A TLS error as a user reads it, with the way out for the common cases.
pub(crate) fn explain(e: &std::io::Error) -> ClientError {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            use rustls::CertificateError as C;
            let why = match c {
                C::UnknownIssuer => {
                    "it is not signed by a trusted CA (a self-hosted CA needs --ca-file)".to_owned()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "it is for another host name".to_owned()
                }
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
                other => format!("{other:?}"),
            };
            ClientError::Tls(format!("the relay's certificate is not valid: {why}"))
        }
        Some(other) => ClientError::Tls(other.to_string()),
        None => ClientError::Tls(e.to_string()),
    }
}
