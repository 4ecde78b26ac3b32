//! HTTP fetching for the REST and stats sources: the whole exchange under one deadline, the
//! body size-capped and read in chunks, every failure classified for the `kind` label.

use std::time::Duration;

use crate::config::tls::tls_failure;
use crate::config::{BasicCredentials, TlsPlan};
use crate::model::source::{ErrorKind, TargetError};

/// A failed HTTP fetch, classified for the `kind` label.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Timeout(_) => ErrorKind::Timeout,
            FetchError::Connect(_) => ErrorKind::Connect,
            FetchError::Tls(_) => ErrorKind::Tls,
            FetchError::HttpStatus(401) => ErrorKind::Auth,
            FetchError::HttpStatus(403) => ErrorKind::Permission,
            FetchError::HttpStatus(_) => ErrorKind::HttpStatus,
            FetchError::TooLarge(_) => ErrorKind::TooLarge,
            FetchError::Other(_) => ErrorKind::Other,
        }
    }
}

impl From<FetchError> for TargetError {
    fn from(e: FetchError) -> Self {
        TargetError::new(e.kind(), e.to_string())
    }
}

/// An HTTP client: the one shared by the sources without a `tls` section (no pool reuse across
/// targets matters here: Patroni answers HTTP/1.0 and closes), or one of a source's own with
/// its checked TLS setup.
pub fn http_client(tls: Option<&TlsPlan>) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("pgha-exporter/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30));
    let builder = match tls {
        Some(plan) => builder.use_preconfigured_tls(rustls::ClientConfig::clone(&plan.rustls)),
        None => builder,
    };
    builder.build().expect("an HTTP client with a rustls setup built at validation")
}

/// How one HTTP source is called: the shared client, with this source's deadline, body cap and
/// credentials.
#[derive(Debug, Clone)]
pub struct HttpCaller {
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub auth: Option<BasicCredentials>,
}

impl HttpCaller {
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        get_capped(&self.client, url, self.timeout, self.max_body_bytes, self.auth.as_ref()).await
    }
}

/// `GET url`, the whole exchange (connect, headers, body) under `deadline`, the body capped at
/// `max_bytes` (read in chunks, so an endless body is cut off, not buffered).
pub async fn get_capped(
    client: &reqwest::Client,
    url: &str,
    deadline: Duration,
    max_bytes: usize,
    auth: Option<&BasicCredentials>,
) -> Result<Vec<u8>, FetchError> {
    let exchange = async {
        let mut request = client.get(url);
        if let Some(a) = auth {
            request = request.basic_auth(&a.username, Some(a.password.expose()));
        }
        let mut response = request.send().await.map_err(classify)?;
        if !response.status().is_success() {
            return Err(FetchError::HttpStatus(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|len| len > max_bytes as u64) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(deadline)),
    }
}

/// The innermost cause of an error ("Connection refused", "Connection reset by peer"): the
/// useful part, which reqwest's own message ("error sending request") leaves out.
fn innermost(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn classify(e: reqwest::Error) -> FetchError {
    if let Some(why) = tls_failure(&e) {
        FetchError::Tls(why)
    } else if e.is_timeout() {
        FetchError::Timeout(Duration::ZERO)
    } else if e.is_connect() {
        FetchError::Connect(innermost(&e))
    } else {
        let cause = innermost(&e);
        FetchError::Other(format!("{}: {cause}", e.without_url()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback server answering every connection with `respond`.
    async fn serve(
        respond: impl Fn(tokio::net::TcpStream) -> futures::future::BoxFuture<'static, ()> + Send + 'static,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(respond(stream));
            }
        });
        format!("http://{addr}/")
    }

    async fn read_request(stream: &mut tokio::net::TcpStream) {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
    }

    #[tokio::test]
    async fn endless_body_is_cut_at_the_cap() {
        let url = serve(|mut s| {
            Box::pin(async move {
                read_request(&mut s).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
                // Bounded: far more than the cap, far less than forever.
                for _ in 0..1000 {
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            })
        })
        .await;
        let err = get_capped(&http_client(None), &url, Duration::from_secs(5), 64 * 1024, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    }

    #[tokio::test]
    async fn declared_oversized_body_is_refused_before_reading() {
        let url = serve(|mut s| {
            Box::pin(async move {
                read_request(&mut s).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\nxx").await;
            })
        })
        .await;
        let err = get_capped(&http_client(None), &url, Duration::from_secs(5), 1024, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_times_out_at_the_deadline() {
        let url = serve(|s| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(s);
            })
        })
        .await;
        let started = std::time::Instant::now();
        let err = get_capped(&http_client(None), &url, Duration::from_millis(300), 1024, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_reset_keeps_its_cause() {
        let url = serve(|mut s| {
            Box::pin(async move {
                read_request(&mut s).await;
                // A zero linger makes the close an RST (blocking on drop is no concern here).
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            })
        })
        .await;
        let err = get_capped(&http_client(None), &url, Duration::from_secs(2), 1024, None).await.unwrap_err();
        assert!(err.to_string().contains("reset"), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_and_http_errors_are_classified() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err =
            get_capped(&http_client(None), &format!("http://127.0.0.1:{port}/"), Duration::from_secs(2), 1024, None)
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
        let url = serve(|mut s| {
            Box::pin(async move {
                read_request(&mut s).await;
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
            })
        })
        .await;
        let err = get_capped(&http_client(None), &url, Duration::from_secs(2), 1024, None).await.unwrap_err();
        assert!(matches!(err, FetchError::HttpStatus(503)), "{err}");
    }

    fn tls_fixture(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls")).join(name)
    }

    /// A loopback HTTPS server with the fixture CA's certificate for 127.0.0.1, asking for a
    /// client certificate signed by that CA when `client_auth`; answers `ok` to any request.
    async fn serve_https(client_auth: bool) -> String {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        crate::config::tls::install_default_provider();
        let certs = vec![CertificateDer::from_pem_file(tls_fixture("server.crt")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(crate::config::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(tls_fixture("ca.crt")).unwrap()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                crate::config::tls::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let acceptor =
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(builder.with_single_cert(certs, key).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(stream).await else { return };
                    let _ = s.read(&mut [0u8; 4096]).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                    let _ = s.shutdown().await;
                });
            }
        });
        format!("https://{addr}/")
    }

    async fn get_with(url: &str, tls: crate::config::TlsConfig) -> Result<Vec<u8>, FetchError> {
        let plan = crate::config::tls::plan("t", &tls, crate::config::tls::Verify::Full, &[b"http/1.1"]).unwrap();
        get_capped(&http_client(Some(&plan)), url, Duration::from_secs(5), 1024, None).await
    }

    #[tokio::test]
    async fn https_targets_are_checked_and_their_failures_are_kind_tls() {
        use crate::config::TlsConfig;
        let url = serve_https(false).await;
        let ca = TlsConfig { ca_file: Some(tls_fixture("ca.crt")), ..Default::default() };
        assert_eq!(get_with(&url, ca.clone()).await.unwrap(), b"ok");
        let other = TlsConfig { ca_file: Some(tls_fixture("other-ca.crt")), ..Default::default() };
        let err = get_with(&url, other.clone()).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.to_string()),
            (ErrorKind::Tls, "TLS: invalid peer certificate: UnknownIssuer".into())
        );
        let named = TlsConfig { server_name: Some("pg.example".into()), ..ca.clone() };
        let err = get_with(&url, named).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls);
        assert!(err.to_string().contains("certificate not valid for name"), "{err}");
        let localhost = TlsConfig { server_name: Some("localhost".into()), ..ca.clone() };
        assert_eq!(get_with(&url, localhost).await.unwrap(), b"ok", "the configured name is the one checked");
        let skip = TlsConfig { insecure_skip_verify: true, ..other };
        assert_eq!(get_with(&url, skip).await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn a_refused_client_certificate_is_kind_tls() {
        use crate::config::TlsConfig;
        let url = serve_https(true).await;
        let ca = TlsConfig { ca_file: Some(tls_fixture("ca.crt")), ..Default::default() };
        let err = get_with(&url, ca.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        assert!(err.to_string().contains("CertificateRequired"), "{err}");
        let with_cert =
            TlsConfig { cert_file: Some(tls_fixture("client.crt")), key_file: Some(tls_fixture("client.key")), ..ca };
        assert_eq!(get_with(&url, with_cert).await.unwrap(), b"ok");
    }
}
