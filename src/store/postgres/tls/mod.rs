//! TLS to PostgreSQL from the URL's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, read as
//! libpq 16 reads them (libpq-connect "sslmode", libpq-ssl "Certificate verification"):
//!
//! - `disable` never encrypts; `prefer` (the default) encrypts when the server offers it;
//!   `require` insists. Neither checks the server's certificate, unless an `sslrootcert`
//!   file is given: then, as in libpq, the chain must lead to that CA (`verify-ca`).
//! - `verify-ca` checks the chain against `sslrootcert`, not the host name. It needs the CA
//!   file: against the system's roots any certificate from a public CA would pass.
//! - `verify-full` checks the chain and that the certificate is for the host connected to,
//!   against the `sslrootcert` file or the system's trusted roots.
//! - `sslrootcert=system` takes the system's roots, makes `verify-full` the default and
//!   refuses any weaker `sslmode`, as libpq 16 does.
//! - `sslcert` + `sslkey` (PEM, the key unencrypted) are presented when the server asks for
//!   a client certificate (`cert` authentication in `pg_hba.conf`).
//!
//! Unlike libpq, no default files are read (`~/.postgresql/root.crt`, `postgresql.crt`,
//! `postgresql.key`): what is used is what the URL says. tokio-postgres knows none of these
//! parameters but `sslmode` (and only up to `require`), so `connect.rs` takes them out of
//! the URL and hands them here. Every problem is an `Err` with a message a person can act
//! on, naming the parameter and the path, never a file's content (a key must not reach a
//! log through a parser's message); it is found when the URL is checked at start.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The URL parameters this module reads and tokio-postgres must not see.
pub(super) const PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

const VERIFY_CA_NEEDS_A_CA: &str = "sslmode \"verify-ca\" needs sslrootcert=<CA file>: it \
    does not check the host name, so against the system's roots any certificate a public CA \
    signed would pass (give the CA, or use \"verify-full\")";
const CERT_WITHOUT_KEY: &str = "sslcert is set but sslkey is not: a client certificate needs \
    its private key (give both sslcert and sslkey)";
const KEY_WITHOUT_CERT: &str = "sslkey is set but sslcert is not: a private key needs its \
    client certificate (give both sslcert and sslkey)";

/// The `ssl*` parameters of a URL, as given (percent-decoded); a later one wins, as in libpq.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SslParams {
    pub mode: Option<String>,
    pub root_cert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl SslParams {
    /// Keeps `value` if `key` is one of [`PARAMS`].
    pub(super) fn set(&mut self, key: &str, value: String) {
        let slot = match key {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root_cert,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return,
        };
        *slot = Some(value);
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Not at all: encryption only (`prefer`, `require` without a CA file).
    Nothing,
    /// The chain must lead to a trusted root; any host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    ChainAndName,
}

/// Whose roots a checked certificate must lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    System,
    File(String),
}

/// What the parameters ask for, with libpq's rules applied; no file read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// What tokio-postgres is told: whether to ask for TLS and whether to insist.
    pub mode: SslMode,
    check: Check,
    roots: Roots,
    /// `sslcert` and `sslkey`.
    client: Option<(String, String)>,
}

impl Plan {
    /// Applies libpq's rules to `params`: `Err` says what is wrong, in a sentence.
    pub(super) fn new(params: SslParams) -> Result<Plan, String> {
        let system = params.root_cert.as_deref() == Some("system");
        let mode = match params.mode.as_deref() {
            None if system => "verify-full",
            None => "prefer",
            Some(mode) => mode,
        };
        // tokio-postgres knows only disable/prefer/require: checking is ours to do.
        let tokio_mode = match mode {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => SslMode::Require,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        };
        if system && mode != "verify-full" {
            return Err(format!(
                "weak sslmode {mode:?} may not be used with sslrootcert=system (use \
                 \"verify-full\"): the system's roots vouch for any host a public CA signed"
            ));
        }
        let roots = match params.root_cert {
            Some(file) if !system => Roots::File(file),
            _ => Roots::System,
        };
        let check = match (mode, &roots) {
            ("disable", _) => Check::Nothing,
            ("verify-full", _) => Check::ChainAndName,
            ("verify-ca", Roots::System) => {
                return Err(VERIFY_CA_NEEDS_A_CA.to_owned());
            }
            // libpq: with a root CA file, `prefer` and `require` check the chain too.
            (_, Roots::File(_)) => Check::Chain,
            (_, Roots::System) => Check::Nothing,
        };
        let client = match (params.cert, params.key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(CERT_WITHOUT_KEY.to_owned());
            }
            (None, Some(_)) => {
                return Err(KEY_WITHOUT_CERT.to_owned());
            }
            (Some(cert), Some(key)) => Some((cert, key)),
        };
        Ok(Plan {
            mode: tokio_mode,
            check,
            roots,
            // Never sent without TLS; as libpq, `disable` ignores the files.
            client: client.filter(|_| tokio_mode != SslMode::Disable),
        })
    }

    /// The TLS connector: reads the files the plan names and checks rustls can use them.
    pub(super) fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions");
        let builder = match self.check {
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider()))),
            Check::Chain => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly::new(self.roots()?)?)),
            Check::ChainAndName => builder.with_root_certificates(self.roots()?),
        };
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates("sslcert", cert)?;
                let private_key = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => format!(
                            "sslkey {key:?} is not the private key of the certificate in \
                             sslcert {cert:?}"
                        ),
                        // rustls' own words name the problem (an unsupported key type),
                        // never the bytes.
                        other => {
                            format!("sslcert {cert:?} with sslkey {key:?} cannot be used: {other}")
                        }
                    })?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, String> {
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Roots::File(path) => {
                for cert in certificates("sslrootcert", path)? {
                    roots.add(cert).map_err(|e| {
                        format!("sslrootcert {path:?} holds a certificate that cannot be a CA: {e}")
                    })?;
                }
            }
            Roots::System => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if roots.is_empty() {
                    return Err("no trusted roots found on this system to verify the \
                                PostgreSQL server's certificate (install the CA \
                                certificates, or give sslrootcert=<CA file>)"
                        .to_owned());
                }
            }
        }
        Ok(Arc::new(roots))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The file of parameter `param`, or why it cannot be read (without the "(os error 2)").
fn read(param: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
            _ => e.to_string(),
        };
        format!("{param} {path:?} cannot be read: {why}")
    })
}

/// The PEM parser's own message can quote a line of the file; for a key that line is
/// secret, so every case is said in our words.
fn pem_problem(param: &str, path: &str, err: &pem::Error, what: &str) -> String {
    match err {
        pem::Error::NoItemsFound => format!("{param} {path:?} holds no PEM {what}"),
        _ => format!("{param} {path:?} is not valid PEM (a malformed or truncated {what})"),
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(param: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(param, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(param, path, &e, "certificate"))?;
    if certs.is_empty() {
        return Err(format!(
            "{param} {path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The first private key in the PEM file of `sslkey`.
fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read("sslkey", path)?;
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(format!(
            "sslkey {path:?} is encrypted: give the key unencrypted (openssl pkey -in KEY \
             -out KEY.plain), readable only by this service"
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_problem("sslkey", path, &e, "private key (PKCS#8, PKCS#1 or SEC1)"))
}

/// libpq's `verify-ca`: the chain must lead to a trusted root and be valid now, whatever
/// host name the certificate is for. rustls' verifier checks the chain first and the name
/// last, so a name mismatch is the one failure that leaves the chain proven; that order is
/// pinned by a unit test (a wrong CA with a wrong name is still refused).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ChainOnly {
    fn new(roots: Arc<RootCertStore>) -> Result<ChainOnly, String> {
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map(ChainOnly)
            .map_err(|e| format!("sslrootcert cannot be used to verify certificates: {e}"))
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.0.root_hint_subjects()
    }
}

/// Accepts any certificate chain, as libpq does below `verify-ca` without a CA file.
/// Signatures are still checked, so the session key is the server's.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
