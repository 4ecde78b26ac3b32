//! The web configuration file as written (exporter-toolkit's fields, unknown ones refused) and
//! as served: a rustls server setup, the users' bcrypt hashes, the extra response headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::WebConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsServerConfig>,
    http_server_config: Option<HttpServerConfig>,
    /// User name to bcrypt hash.
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_auth_type: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

/// exporter-toolkit's (Go's) client authentication types.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    /// Accepted for compatibility; the exporter serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The web configuration in force. The default: plain HTTP, no users, no extra headers.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The certificate, key and CA files it was made from: a change of any is a change of it.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .finish()
    }
}

/// Reads the file. An empty one is a valid, empty configuration at start, as for
/// exporter-toolkit, but not later (`allow_empty` false): a file caught in the middle of being
/// written must not turn TLS and authentication off.
pub(super) fn load(path: &Path, allow_empty: bool) -> Result<WebConfig, WebConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read { path: path.into(), source })?;
    let invalid = |message: String| WebConfigError::Invalid { path: path.into(), message };
    let file: WebConfigFile = match text.trim() {
        "" if allow_empty => WebConfigFile::default(),
        "" => return Err(invalid("empty: refused once started (restart to serve without TLS and users)".into())),
        _ => serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?,
    };
    validate(file, path.parent().unwrap_or(Path::new("."))).map_err(invalid)
}

fn validate(file: WebConfigFile, dir: &Path) -> Result<WebConfig, String> {
    for (user, hash) in &file.basic_auth_users {
        // The hash itself is not secret, but it is not echoed either.
        hash.parse::<bcrypt::HashParts>().map_err(|_| {
            format!("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':'`)")
        })?;
    }
    let mut headers = Vec::new();
    for (name, value) in file.http_server_config.map(|h| h.headers).unwrap_or_default() {
        let n = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("http_server_config.headers: `{name}` is not a header name"))?;
        let v = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("http_server_config.headers.{name}: not a header value"))?;
        headers.push((n, v));
    }
    let files = file.tls_server_config.as_ref().map(|t| super::tls::files(t, dir)).unwrap_or_default();
    let tls = file.tls_server_config.map(|t| super::tls::server_config(&t, dir)).transpose()?.map(Arc::new);
    Ok(WebConfig { tls, users: file.basic_auth_users, headers, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, String> {
        let file: WebConfigFile = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        validate(file, Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls")))
    }

    #[test]
    fn exporter_toolkit_files_are_read_and_mistakes_named() {
        let ok = "tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequireAndVerifyClientCert, client_ca_file: ca.crt, min_version: TLS12}\n\
                  http_server_config: {http2: false, headers: {X-Frame-Options: deny}}\n\
                  basic_auth_users: {prometheus: '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi'}\n";
        let c = parse(ok).unwrap();
        assert!(c.tls.is_some() && c.users.contains_key("prometheus") && c.headers.len() == 1);
        let cases = [
            ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS11}", "TLS 1.0 and 1.1"),
            ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_auth_type: RequireAndVerifyClientCert}", "client_ca_file"),
            ("tls_server_config: {cert_file: nope.crt, key_file: server.key}", "cert_file"),
            ("tls_server_config: {cert_file: client.crt, key_file: server.key}", "key_file"),
            ("tls_server_config: {cert_file: server.crt, key_file: server.key, cipher_suites: [x]}", "cipher_suites"),
            ("basic_auth_users: {u: plain-password-here}", "basic_auth_users.u: not a bcrypt hash"),
            ("tls_server_config: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}", "without a client_auth_type"),
            ("http_server_config: {headers: {'bad header': x}}", "not a header name"),
        ];
        for (yaml, said) in cases {
            let err = parse(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
            assert!(err.contains(said), "{yaml}: {err}");
            assert!(!err.contains("plain-password-here"), "{err}");
        }
    }
}
