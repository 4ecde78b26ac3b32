//! The whoami pages of the virtual IP and of each HAProxy instance behind it.
//!
//! Read with a plain HTTP/1.0 exchange over a socket of our own rather than the HTTP client,
//! because how the page through the virtual IP fails is the answer: a connection that cannot be
//! made within the deadline (nobody answers ARP for the address), one refused (the address is
//! held, nothing listens), one made but left unanswered (the holder is frozen). The pages are
//! read together each round, so the holder and the instances' states are one snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::timed;
use crate::config::{VipPlan, WhoamiUrl};
use crate::model::source::{ErrorKind, TargetError};
use crate::model::vip::{Answer, VipRound, Whoami};
use crate::state::ClusterState;

/// Longest answer read: a whoami page is one short line.
const MAX_ANSWER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum WhoamiError {
    #[error("no connection within {0:?}: nobody answers for the address")]
    ConnectTimeout(Duration),
    #[error("cannot connect: {0}")]
    Unreachable(std::io::Error),
    #[error("connection refused: nothing listens there")]
    Refused,
    #[error("connected, but no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("the connection was reset before the answer: {0}")]
    Reset(std::io::Error),
    #[error("cannot resolve the host: {0}")]
    Resolve(String),
    #[error("not a whoami page: {0}")]
    Bad(String),
}

impl WhoamiError {
    /// What the failure says of the address.
    pub fn answer(&self) -> Answer {
        match self {
            WhoamiError::ConnectTimeout(_) | WhoamiError::Unreachable(_) => Answer::Unreachable,
            // A reset comes from a kernel that holds the address with nothing behind it for us.
            WhoamiError::Refused | WhoamiError::Reset(_) => Answer::Refused,
            WhoamiError::NoAnswer(_) => Answer::NoAnswer,
            WhoamiError::Resolve(_) | WhoamiError::Bad(_) => Answer::BadAnswer,
        }
    }
}

impl From<WhoamiError> for TargetError {
    fn from(e: WhoamiError) -> Self {
        let kind = match &e {
            WhoamiError::ConnectTimeout(_) | WhoamiError::NoAnswer(_) => ErrorKind::Timeout,
            WhoamiError::Unreachable(_) | WhoamiError::Refused | WhoamiError::Reset(_) | WhoamiError::Resolve(_) => {
                ErrorKind::Connect
            }
            WhoamiError::Bad(_) => ErrorKind::Parse,
        };
        TargetError::new(kind, e.to_string())
    }
}

/// An HTTP/1.0 response holding a whoami page: status 200 and `NAME STATE` as its body.
pub fn parse_answer(raw: &[u8]) -> Result<Whoami, WhoamiError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| WhoamiError::Bad("no end of headers".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") || !status.starts_with("HTTP/1.") {
        return Err(WhoamiError::Bad(format!("status line `{}`", crate::model::text::bounded_to(status, 80))));
    }
    Whoami::parse(body).ok_or_else(|| WhoamiError::Bad("the body is not `NAME STATE`".into()))
}

/// One exchange with a whoami page, all of it under `deadline`.
pub async fn fetch(url: &WhoamiUrl, deadline: Duration) -> Result<Whoami, WhoamiError> {
    let started = Instant::now();
    // A slow resolver is no news about the address: it is a failure of its own.
    let addrs = tokio::time::timeout(deadline, tokio::net::lookup_host((url.host.as_str(), url.port)))
        .await
        .map_err(|_| WhoamiError::Resolve(format!("no answer within {deadline:?}")))?
        .map_err(|e| WhoamiError::Resolve(e.to_string()))?;
    let addr = addrs.into_iter().next().ok_or_else(|| WhoamiError::Bad("the host has no address".into()))?;
    let left = deadline.saturating_sub(started.elapsed());
    let mut stream = match tokio::time::timeout(left, TcpStream::connect(addr)).await {
        Err(_) => return Err(WhoamiError::ConnectTimeout(deadline)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(WhoamiError::Refused),
        Ok(Err(e)) => return Err(WhoamiError::Unreachable(e)),
        Ok(Ok(s)) => s,
    };
    let host = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let request =
        format!("GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pgha-exporter\r\nConnection: close\r\n\r\n", url.path);
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::with_capacity(256);
        (&mut stream).take(MAX_ANSWER as u64 + 1).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let left = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, exchange).await {
        Err(_) => Err(WhoamiError::NoAnswer(deadline)),
        Ok(Err(e)) => Err(WhoamiError::Reset(e)),
        Ok(Ok(raw)) if raw.len() > MAX_ANSWER => Err(WhoamiError::Bad(format!("longer than {MAX_ANSWER} bytes"))),
        Ok(Ok(raw)) => parse_answer(&raw),
    }
}

async fn round(plan: &VipPlan) -> VipRound {
    let deadline = plan.polling.timeout;
    let mut failure = None;
    let through = timed(async { fetch(&plan.whoami_url, deadline).await.inspect_err(|e| failure = Some(e.answer())) });
    let pages =
        plan.instances.iter().map(|(name, url)| async move { (name.clone(), timed(fetch(url, deadline)).await) });
    let (through_vip, instances) = tokio::join!(through, futures::future::join_all(pages));
    VipRound { through_vip, failure, instances }
}

/// The virtual IP's loop: every page each interval, applied as one round.
pub async fn poll(state: Arc<ClusterState>, plan: VipPlan) {
    loop {
        let began = std::time::Instant::now();
        state.apply_vip(round(&plan).await);
        state.cadence.next_round(began, plan.polling.pace()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vip::VrrpState;
    use tokio::net::TcpListener;

    #[test]
    fn answers_parse_or_say_why_not() {
        let ok =
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 16\r\n\r\nhaproxy2 backup\n");
        assert_eq!(ok.unwrap(), Whoami { name: "haproxy2".into(), state: VrrpState::Backup });
        let cases: [(&[u8], &str); 4] = [
            (b"HTTP/1.1 503 Service Unavailable\r\n\r\n<html>", "status line `HTTP/1.1 503 Service Unavailable`"),
            (b"HTTP/1.1 200 OK\r\n\r\n# pxname,svname,\n", "the body is not `NAME STATE`"),
            (b"SSH-2.0-OpenSSH_9.2\r\n", "no end of headers"),
            (b"", "no end of headers"),
        ];
        for (raw, want) in cases {
            let err = parse_answer(raw).unwrap_err();
            assert_eq!(err.to_string(), format!("not a whoami page: {want}"));
            assert_eq!(err.answer(), Answer::BadAnswer);
        }
    }

    fn url(port: u16) -> WhoamiUrl {
        WhoamiUrl { host: "127.0.0.1".into(), port, path: "/".into() }
    }

    #[tokio::test]
    async fn refused_and_unanswered_connections_are_told_apart() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = fetch(&url(port), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.answer(), Answer::Refused, "{err}");

        // Accepted by the kernel, never answered: what a frozen HAProxy looks like.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let started = Instant::now();
        let err = fetch(&url(port), Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(err.answer(), Answer::NoAnswer, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "the deadline holds: {:?}", started.elapsed());

        let endless = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = endless.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = endless.accept().await.unwrap();
            let _ = s.write_all(&vec![b'x'; MAX_ANSWER * 4]).await;
        });
        let err = fetch(&url(port), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.to_string(), format!("not a whoami page: longer than {MAX_ANSWER} bytes"));
    }

    #[tokio::test]
    async fn a_page_is_read_with_its_path_and_host() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let n = s.read(&mut request).await.unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhaproxy master\n").await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let page = WhoamiUrl { path: "/whoami?x=1".into(), ..url(port) };
        let w = fetch(&page, Duration::from_secs(1)).await.unwrap();
        assert_eq!((w.name.as_str(), w.state), ("haproxy", VrrpState::Master));
        let request = seen.await.unwrap();
        assert!(request.starts_with(&format!("GET /whoami?x=1 HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n")), "{request}");
        assert!(request.contains("\r\nConnection: close\r\n\r\n"), "{request}");
    }
}
