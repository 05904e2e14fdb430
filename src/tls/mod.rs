//! TLS material: PEM files read and checked once at start, so a bad certificate or key stops
//! the process with one line naming the setting instead of failing the first handshake.
//!
//! Both ports use rustls with the aws-lc-rs provider (the one tonic and reqwest are built
//! with). The gRPC port is handed to tonic's own TLS acceptor ([`GrpcTls::server_config`]);
//! the HTTP intake gets a [`listener::TlsListener`] that axum serves like a plain socket, so
//! its graceful shutdown is the same either way. Errors name the file and the problem, never
//! the content: a private key must not reach a log through a parser's message.

pub mod listener;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::secret::Secret;

/// A client that opens a connection and never finishes the handshake is dropped after this,
/// so idle half-open sockets cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A setting as the operator knows it, for messages: `--grpc-tls-cert (GRPC_TLS_CERT)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.flag, self.env)
    }
}

/// A certificate chain and its private key, both PEM, checked to parse and to match.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    /// Held as a [`Secret`]: a `{:?}` of the config must not print a private key.
    pub key_pem: Secret,
    /// Where they came from, for log lines.
    pub cert_path: PathBuf,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_path", &self.cert_path)
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

/// TLS on the gRPC port; with `client_ca`, mutual TLS: every connection must present a
/// certificate signed by that CA.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    pub identity: TlsIdentity,
    pub client_ca_pem: Option<String>,
}

impl GrpcTls {
    /// tonic's server TLS settings. The PEM was checked by [`load_identity`] and
    /// [`load_ca`]; tonic parses it again when the server starts.
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(
            &self.identity.cert_pem,
            self.identity.key_pem.expose(),
        );
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM file as text. The message names the setting and the path, and for a key the
/// content never appears in it.
fn read_pem(setting: Setting, path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{setting} {path:?} cannot be read: {}", io_reason(&e)))?;
    String::from_utf8(bytes).map_err(|_| {
        format!(
            "{setting} {path:?} is not a PEM file (binary content; DER must be converted to PEM)"
        )
    })
}

/// The I/O error without the "(os error 2)" noise.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

/// The parser's own message can quote a line of the file; for a key that line is secret, so
/// every case is said in our words.
fn pem_problem(err: &pem::Error, what: &str) -> String {
    match err {
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        pem::Error::SectionTooLarge => "holds a PEM section that is too large".into(),
        _ => format!("is not valid PEM (a malformed or truncated {what} section)"),
    }
}

/// Every certificate in a PEM file; at least one.
fn parse_certs(
    setting: Setting,
    path: &Path,
    pem_text: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{setting} {path:?} {}", pem_problem(&e, "certificate")))?;
    if certs.is_empty() {
        return Err(format!(
            "{setting} {path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// A certificate and its key given as two settings: both or neither.
pub fn load_pair(
    cert: (Setting, Option<&Path>),
    key: (Setting, Option<&Path>),
) -> Result<Option<TlsIdentity>, String> {
    match (cert, key) {
        ((_, None), (_, None)) => Ok(None),
        ((cert, Some(_)), (key, None)) => Err(format!(
            "{cert} is set but {key} is not: a certificate needs its private key"
        )),
        ((cert, None), (key, Some(_))) => Err(format!(
            "{key} is set but {cert} is not: a private key needs its certificate"
        )),
        ((cert, Some(cert_path)), (key, Some(key_path))) => {
            load_identity((cert, cert_path), (key, key_path)).map(Some)
        }
    }
}

/// Loads a certificate chain and its private key and checks that rustls accepts the pair
/// (parseable, a supported key type, the key belongs to the first certificate).
pub fn load_identity(cert: (Setting, &Path), key: (Setting, &Path)) -> Result<TlsIdentity, String> {
    let (cert_setting, cert_path) = cert;
    let (key_setting, key_path) = key;
    let cert_pem = read_pem(cert_setting, cert_path)?;
    let chain = parse_certs(cert_setting, cert_path, &cert_pem)?;
    let key_pem = Secret::new(read_pem(key_setting, key_path)?);
    if key_pem
        .expose()
        .contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    {
        return Err(format!(
            "{key_setting} {key_path:?} is encrypted: give the key unencrypted \
             (openssl pkey -in KEY -out KEY.plain), readable only by this service"
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|e| {
        format!(
            "{key_setting} {key_path:?} {}",
            pem_problem(&e, "private key (PKCS#8, PKCS#1 or SEC1)")
        )
    })?;
    server_builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{key_setting} {key_path:?} is not the private key of the certificate in \
                 {cert_setting} {cert_path:?}"
            ),
            // rustls' own words name the problem (bad encoding, unsupported key type),
            // never the bytes.
            other => format!(
                "{cert_setting} {cert_path:?} with {key_setting} {key_path:?} cannot be used: {other}"
            ),
        })?;
    Ok(TlsIdentity {
        cert_pem,
        key_pem,
        cert_path: cert_path.to_owned(),
    })
}

/// Loads CA certificate(s) to trust (the server's client CA, or the CA a client trusts) and
/// checks rustls can verify certificates with them.
pub fn load_ca(setting: Setting, path: &Path) -> Result<String, String> {
    let pem_text = read_pem(setting, path)?;
    let certs = parse_certs(setting, path, &pem_text)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!("{setting} {path:?} holds a certificate that cannot be a trust anchor: {e}")
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("{setting} {path:?} cannot be used to verify certificates: {e}"))?;
    Ok(pem_text)
}

fn server_builder() -> rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
}

/// The rustls settings of the HTTPS intake: HTTP/2 and HTTP/1.1 offered by ALPN (Fintoc's
/// deliveries and probes may use either).
pub fn http_server_config(identity: &TlsIdentity) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("checked by load_identity");
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.expose().as_bytes())
        .expect("checked by load_identity");
    let mut config = server_builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("checked by load_identity");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: Setting = Setting {
        flag: "--x-cert",
        env: "X_CERT",
    };
    const KEY: Setting = Setting {
        flag: "--x-key",
        env: "X_KEY",
    };

    #[test]
    fn a_key_file_that_is_not_pem_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA=!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = PrivateKeyDer::from_pem_slice(&std::fs::read(&key).unwrap()).unwrap_err();
        let message = format!("{KEY} {key:?} {}", pem_problem(&err, "private key"));
        assert!(!message.contains("c2VjcmV0"), "{message}");
        assert!(message.contains("--x-key (X_KEY)"), "{message}");
        let missing = load_identity((CERT, &dir.path().join("nope")), (KEY, &key)).unwrap_err();
        assert!(missing.contains("--x-cert (X_CERT)") && missing.contains("no such file"));
    }
}
