//! `pgha-exporter healthcheck`: one `GET /-/healthy` of a running exporter, for a container's
//! `HEALTHCHECK` (a slim image has no curl). It is a liveness check of the process next to it,
//! so an `https` URL is read without checking the certificate (the check talks to itself over
//! loopback; no secret is sent), and a 401 counts as alive: the web config asks for basic auth
//! on every path, and an exporter that answers with 401 is up and serving.

use std::time::Duration;

use crate::collect::http::{get_capped, http_client, FetchError};
use crate::config::tls::{plan, Verify};
use crate::config::{ConfigError, TlsConfig};

/// The largest answer read: `/-/healthy` answers a line.
const MAX_BODY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("{url}: not a URL with http or https")]
    BadUrl { url: String },
    #[error("setting up TLS: {0}")]
    Tls(#[from] ConfigError),
    #[error("{url}: {source}")]
    Unhealthy { url: String, source: FetchError },
}

/// What a healthy exporter answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthy {
    /// 200, with the body it gave.
    Ok(String),
    /// 401: alive, behind basic auth.
    AuthRequired,
}

impl std::fmt::Display for Healthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Healthy::Ok(body) => write!(f, "200 {body}"),
            Healthy::AuthRequired => f.write_str("401 (basic auth required: the exporter answers)"),
        }
    }
}

/// Reads `url` once within `timeout`: healthy on 200 or 401, an error naming why otherwise.
pub async fn check(url: &str, timeout: Duration) -> Result<Healthy, HealthcheckError> {
    let client = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("http") => http_client(None),
        Some("https") => http_client(Some(&plan("healthcheck", &TlsConfig::default(), Verify::Nothing, &[])?)),
        _ => return Err(HealthcheckError::BadUrl { url: url.to_string() }),
    };
    match get_capped(&client, url, timeout, MAX_BODY, None).await {
        Ok(body) => Ok(Healthy::Ok(String::from_utf8_lossy(&body).trim().to_string())),
        Err(FetchError::HttpStatus(401)) => Ok(Healthy::AuthRequired),
        Err(source) => Err(HealthcheckError::Unhealthy { url: url.to_string(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_without_http_is_refused_before_any_call() {
        let err = check("ftp://127.0.0.1:9744/-/healthy", Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.to_string(), "ftp://127.0.0.1:9744/-/healthy: not a URL with http or https");
        assert!(matches!(check("127.0.0.1:9744", Duration::from_secs(1)).await, Err(HealthcheckError::BadUrl { .. })));
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy_with_the_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/-/healthy");
        let err = check(&url, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, HealthcheckError::Unhealthy { source: FetchError::Connect(_), .. }), "{err:?}");
        assert!(err.to_string().starts_with(&url), "{err}");
    }
}
