//! TLS toward targets, checked when the configuration is read: the PEM files are read and
//! parsed and the rustls client setup is built once, so a missing file, a key that does not
//! match its certificate or a bad server name is a configuration error naming its field, never a
//! failure at the first call. Every rustls setup of the process uses one crypto provider
//! (aws-lc-rs, the one reqwest and etcd-client are built with): two compiled in make rustls'
//! default builder panic, so nothing here relies on a process-wide default.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::{invalid, ConfigError, TlsConfig};

/// The one crypto provider of the process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes [`provider`] the process default, for libraries that build their own rustls setup
/// (tonic inside etcd-client). Harmless when already done.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// How much of the target's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The chain to a trusted CA and the name (HTTPS, etcd, `sslmode=verify-full`).
    Full,
    /// The chain only, any name (`sslmode=verify-ca`).
    ChainOnly,
    /// Nothing: encrypted, but any certificate is accepted (`insecure_skip_verify`,
    /// `sslmode=require`).
    Nothing,
}

/// A client certificate and its key, as PEM. `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity { key: *** }")
    }
}

/// A validated `tls` section: the PEM contents (etcd's gRPC stack takes them as they are) and
/// the rustls setup built from them (for HTTPS and PostgreSQL).
#[derive(Clone)]
pub struct TlsPlan {
    /// CA certificates, PEM; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub identity: Option<ClientIdentity>,
    /// The name the target's certificate must carry, instead of the address's host.
    pub server_name: Option<String>,
    pub verify: Verify,
    pub rustls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPlan")
            .field("ca", &self.ca_pem.as_ref().map(|_| "given"))
            .field("identity", &self.identity)
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish()
    }
}

/// Checks a `tls` section at `field` and builds its client setup, verifying as `verify` says
/// (`insecure_skip_verify` turns any mode into [`Verify::Nothing`]).
pub fn plan(field: &str, c: &TlsConfig, verify: Verify, alpn: &[&[u8]]) -> Result<TlsPlan, ConfigError> {
    let verify = if c.insecure_skip_verify { Verify::Nothing } else { verify };
    let ca_pem = c.ca_file.as_deref().map(|p| read(&format!("{field}.ca_file"), p)).transpose()?;
    let ca = ca_pem.as_deref().map(|pem| certificates(&format!("{field}.ca_file"), pem)).transpose()?;
    let identity = match (&c.cert_file, &c.key_file) {
        (Some(cert), Some(key)) => Some(ClientIdentity {
            cert_pem: read(&format!("{field}.cert_file"), cert)?,
            key_pem: read(&format!("{field}.key_file"), key)?,
        }),
        (None, None) => None,
        _ => return Err(invalid(field, "set both `cert_file` and `key_file`, or neither")),
    };
    if let Some(name) = &c.server_name {
        ServerName::try_from(name.as_str())
            .map_err(|_| invalid(format!("{field}.server_name"), format!("`{name}` is not a host name")))?;
    }
    let rustls = client_config(field, ca, identity.as_ref(), c.server_name.clone(), verify, alpn)?;
    Ok(TlsPlan { ca_pem, identity, server_name: c.server_name.clone(), verify, rustls: Arc::new(rustls) })
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))
}

fn certificates(field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(field, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(field, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn client_config(
    field: &str,
    ca: Option<Vec<CertificateDer<'static>>>,
    identity: Option<&ClientIdentity>,
    server_name: Option<String>,
    verify: Verify,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, ConfigError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| invalid(field, e.to_string()))?;
    let verifier = verifier(field, ca, server_name, verify)?;
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => {
            let certs = certificates(&format!("{field}.cert_file"), &id.cert_pem)?;
            // The key's own parse error says nothing of its contents.
            let key = PrivateKeyDer::from_pem_slice(&id.key_pem)
                .map_err(|e| invalid(format!("{field}.key_file"), format!("no PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| invalid(format!("{field}.key_file"), format!("does not fit the certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn verifier(
    field: &str,
    ca: Option<Vec<CertificateDer<'static>>>,
    server_name: Option<String>,
    verify: Verify,
) -> Result<Arc<dyn ServerCertVerifier>, ConfigError> {
    let server_name = server_name.map(|n| ServerName::try_from(n).expect("checked by plan()"));
    // Nothing to check against: no roots needed (a host without CA certificates is fine).
    if verify == Verify::Nothing {
        return Ok(Arc::new(Checked { inner: None, verify, server_name }));
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for cert in certs {
                roots.add(cert).map_err(|e| invalid(format!("{field}.ca_file"), format!("not a CA: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(invalid(field, "no CA certificate: set `ca_file` (the system has no roots)"));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| invalid(field, e.to_string()))?;
    Ok(Arc::new(Checked { inner: Some(inner), verify, server_name }))
}

/// The standard chain check, with the name replaced by the configured one, or skipped; with
/// [`Verify::Nothing`] only the handshake's signatures are checked (the peer holds the key of
/// the certificate it sent, whatever that certificate is).
#[derive(Debug)]
struct Checked {
    inner: Option<Arc<WebPkiServerVerifier>>,
    verify: Verify,
    server_name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else { return Ok(ServerCertVerified::assertion()) };
        let name = self.server_name.as_ref().unwrap_or(server_name);
        match (self.verify, inner.verify_server_cert(end_entity, intermediates, name, ocsp, now)) {
            (Verify::Nothing, _) => Ok(ServerCertVerified::assertion()),
            (Verify::ChainOnly, Err(rustls::Error::InvalidCertificate(e))) if wrong_name(&e) => {
                Ok(ServerCertVerified::assertion())
            }
            (_, result) => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.inner {
            Some(inner) => inner.verify_tls12_signature(message, cert, dss),
            None => rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            ),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.inner {
            Some(inner) => inner.verify_tls13_signature(message, cert, dss),
            None => rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            ),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn wrong_name(e: &CertificateError) -> bool {
    matches!(e, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
}

/// The TLS failure somewhere in an error's chain of causes ("invalid peer certificate:
/// UnknownIssuer", "received fatal alert: CertificateRequired"), if it has one. `io::Error`
/// hides what it wraps from `source()`, so it is looked into as well.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(found) = tls_failure(inner) {
                return Some(found);
            }
        }
        next = cause.source();
    }
    // Some layers (tonic's transport) keep only the text of a TLS error.
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if let Some(at) = TLS_PHRASES.iter().find_map(|p| text.find(p)) {
            // From the phrase to the end of the quoted or bracketed error that holds it.
            let rest = &text[at..];
            return Some(rest[..rest.find(['"', ')', '}']).unwrap_or(rest.len())].trim_end().to_string());
        }
        next = cause.source();
    }
    None
}

/// How rustls' errors read (its `Display`), for errors that kept only their text.
const TLS_PHRASES: [&str; 5] = [
    "invalid peer certificate",
    "received fatal alert",
    "peer sent no certificates",
    "peer is incompatible",
    "peer misbehaved",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_failure_is_found_in_the_causes_or_in_their_text() {
        let wrapped =
            std::io::Error::other(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired));
        let outer = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, wrapped);
        assert_eq!(tls_failure(&outer).as_deref(), Some("received fatal alert: CertificateRequired"));
        let text = std::io::Error::other(
            "grpc request error: source: hyper::Error(Io, Custom { error: \"invalid peer certificate: Expired\" })",
        );
        assert_eq!(tls_failure(&text).as_deref(), Some("invalid peer certificate: Expired"));
        assert_eq!(tls_failure(&std::io::Error::other("connection closed")), None);
    }
}
