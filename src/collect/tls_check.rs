//! Why a TLS connection failed, when the library that made it lost the reason. With TLS 1.3 a
//! server refuses a client certificate (missing, expired, from an unknown CA) after the
//! handshake, in an alert that hyper's client, under tonic, drops: etcd calls then fail as
//! "operation was canceled" or "connection closed", which says nothing. One handshake of our
//! own with the same setup, and a short read, bring the alert back.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::tls::tls_failure;
use crate::config::TlsPlan;

/// How long the read after the handshake waits for an alert: a server that accepted the
/// certificate sends nothing (it waits for the client), so this is what a diagnosis costs then.
const ALERT_WAIT: Duration = Duration::from_millis(300);

/// The TLS failure of a connection to `url` made with `plan`, if there is one.
pub async fn diagnose(url: &str, plan: &TlsPlan, timeout: Duration) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default()?;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await.ok()?.ok()?;
    let name = ServerName::try_from(plan.server_name.clone().unwrap_or(host)).ok()?;
    let connector = tokio_rustls::TlsConnector::from(plan.rustls.clone());
    let mut stream = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => return None,
        Ok(Err(e)) => return tls_failure(&e),
        Ok(Ok(stream)) => stream,
    };
    match tokio::time::timeout(ALERT_WAIT, stream.read(&mut [0u8; 1])).await {
        Ok(Err(e)) => tls_failure(&e),
        _ => None,
    }
}
