//! The server side of TLS: the rustls setup of `tls_server_config`, with Go's five client
//! authentication types. TLS 1.0 and 1.1 are refused (rustls has neither).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::file::{ClientAuth, TlsServerConfig, TlsVersion};
use crate::config::tls::provider;

pub(super) fn server_config(t: &TlsServerConfig, dir: &Path) -> Result<rustls::ServerConfig, String> {
    let at = |p: &Path| dir.join(p);
    let versions = versions(t.min_version, t.max_version)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(at(&t.cert_file))
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("tls_server_config.cert_file: {}: {e}", t.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("tls_server_config.cert_file: {}: no certificate", t.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(at(&t.key_file))
        .map_err(|e| format!("tls_server_config.key_file: {}: {e}", t.key_file.display()))?;
    let verifier = client_verifier(t, dir)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config.key_file: does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let (min, max) = (min.unwrap_or(TlsVersion::TLS12), max.unwrap_or(TlsVersion::TLS13));
    if min < TlsVersion::TLS12 || max < TlsVersion::TLS12 {
        return Err("tls_server_config: TLS 1.0 and 1.1 are refused: use min_version TLS12 or TLS13".into());
    }
    let all = [(TlsVersion::TLS12, &rustls::version::TLS12), (TlsVersion::TLS13, &rustls::version::TLS13)];
    let chosen: Vec<_> = all.iter().filter(|(v, _)| (min..=max).contains(v)).map(|(_, p)| *p).collect();
    if chosen.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(chosen)
}

/// The files a server setup is made from.
pub(super) fn files(t: &TlsServerConfig, dir: &Path) -> Vec<std::path::PathBuf> {
    [Some(&t.cert_file), Some(&t.key_file), t.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| dir.join(p))
        .collect()
}

fn client_verifier(t: &TlsServerConfig, dir: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    if t.client_ca_file.is_some() && t.client_auth_type == ClientAuth::NoClientCert {
        // As exporter-toolkit: a CA given for nothing is a mistake, not mTLS.
        return Err("tls_server_config: client_ca_file without a client_auth_type that checks it (RequireAndVerifyClientCert or VerifyClientCertIfGiven)".into());
    }
    let verified = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, String> {
        let file = t.client_ca_file.as_ref().ok_or("tls_server_config: this client_auth_type needs client_ca_file")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.join(file)).map_err(|e| format!("client_ca_file: {e}"))? {
            roots.add(cert.map_err(|e| format!("client_ca_file: {e}"))?).map_err(|e| format!("client_ca_file: {e}"))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let builder = if optional { builder.allow_unauthenticated() } else { builder };
        builder.build().map_err(|e| format!("client_ca_file: {e}"))
    };
    match t.client_auth_type {
        ClientAuth::NoClientCert => Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::RequestClientCert => Ok(Arc::new(AnyClient { required: false })),
        ClientAuth::RequireAnyClientCert => Ok(Arc::new(AnyClient { required: true })),
        ClientAuth::VerifyClientCertIfGiven => verified(true),
        ClientAuth::RequireAndVerifyClientCert => verified(false),
    }
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for (or
/// required) but not checked against a CA; its handshake signature still is.
#[derive(Debug)]
struct AnyClient {
    required: bool,
}

impl ClientCertVerifier for AnyClient {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
