//! HTTP fetching for the REST and stats sources: the whole exchange under one deadline, the
//! body size-capped and read in chunks, every failure classified for the `kind` label.

use std::time::Duration;

use crate::config::BasicCredentials;
use crate::model::source::{ErrorKind, TargetError};

/// A failed HTTP fetch, classified for the `kind` label.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
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

/// The HTTP client shared by all HTTP sources: no connection pool reuse across targets matters
/// here (Patroni answers HTTP/1.0 and closes), but one client keeps one TLS setup.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("pgha-exporter/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client without custom TLS roots cannot fail")
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
    if e.is_timeout() {
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
        let err = get_capped(&http_client(), &url, Duration::from_secs(5), 64 * 1024, None).await.unwrap_err();
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
        let err = get_capped(&http_client(), &url, Duration::from_secs(5), 1024, None).await.unwrap_err();
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
        let err = get_capped(&http_client(), &url, Duration::from_millis(300), 1024, None).await.unwrap_err();
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
        let err = get_capped(&http_client(), &url, Duration::from_secs(2), 1024, None).await.unwrap_err();
        assert!(err.to_string().contains("reset"), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_and_http_errors_are_classified() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = get_capped(&http_client(), &format!("http://127.0.0.1:{port}/"), Duration::from_secs(2), 1024, None)
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
        let err = get_capped(&http_client(), &url, Duration::from_secs(2), 1024, None).await.unwrap_err();
        assert!(matches!(err, FetchError::HttpStatus(503)), "{err}");
    }
}
