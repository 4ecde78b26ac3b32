//! Refusing to send the probes' password to a server that asks for it in clear or as MD5
//! (`probes.require_scram`). tokio-postgres answers whatever authentication the server asks
//! for, so the server's messages are read on their way in, up to the end of authentication: a
//! request for a cleartext (3) or MD5 (5) password ends the connection before the client
//! can answer it. SCRAM (10, 11, 12) never sends the password itself and passes.
//!
//! The guard sits on the TCP stream, where it first sees the one-byte answer to the TLS request
//! (`S`: what follows is TLS, so it steps aside and a second guard inside the TLS stream takes
//! over; `N`: the session goes on in plain, and it keeps reading), and inside the TLS stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// Where the guard is in the server's messages.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// The first byte is the answer to a TLS request.
    TlsAnswer,
    /// Reading a message's type and length (5 bytes) and, for `R`, its code (4 more).
    Header(Vec<u8>),
    /// Inside a message's body: this many bytes to pass.
    Body(usize),
    /// Authentication is over (or TLS took over): everything passes.
    Done,
}

/// The state machine, fed with the bytes the server sends.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordGuard {
    state: State,
}

impl PasswordGuard {
    /// `tls_requested`: the client sends a TLS request first, so the first byte answers it.
    pub fn new(tls_requested: bool) -> Self {
        Self { state: if tls_requested { State::TlsAnswer } else { State::Header(Vec::new()) } }
    }

    /// Checks `bytes`; an error names what the server asked for.
    pub fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::TlsAnswer => {
                    self.state = if bytes[0] == b'S' { State::Done } else { State::Header(Vec::new()) };
                    bytes = &bytes[1..];
                }
                State::Body(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = State::Header(Vec::new());
                    }
                }
                State::Header(head) => {
                    let want = if head.first() == Some(&b'R') { 9 } else { 5 };
                    let n = (want - head.len()).min(bytes.len());
                    head.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if head.len() == want {
                        self.state = next(head)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The state after a complete header (5 bytes, or 9 for an authentication request).
fn next(head: &[u8]) -> io::Result<State> {
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head.len() == 5 && head[0] == b'R' {
        return Ok(State::Header(head.to_vec()));
    }
    if head[0] != b'R' {
        // An error ends the exchange; anything else before authentication is skipped.
        return Ok(if head[0] == b'E' { State::Done } else { body(len.saturating_sub(4)) });
    }
    match u32::from_be_bytes([head[5], head[6], head[7], head[8]]) {
        0 => Ok(State::Done),
        3 => Err(refused("in clear")),
        5 => Err(refused("as MD5")),
        _ => Ok(body(len.saturating_sub(8))),
    }
}

fn body(n: usize) -> State {
    if n == 0 {
        State::Header(Vec::new())
    } else {
        State::Body(n)
    }
}

fn refused(how: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("the server asked for the password {how}: not sent (probes.require_scram)"),
    )
}

/// A stream whose incoming bytes pass through a [`PasswordGuard`] (none: all pass).
pub struct Guarded<S> {
    inner: S,
    guard: Option<PasswordGuard>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, guard: Option<PasswordGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(guard) = &mut this.guard {
                    guard.feed(&buf.filled()[before..])?;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Guarded<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose streams are guarded inside the TLS layer.
pub struct GuardedTls<T> {
    pub inner: T,
    pub guard: bool,
}

impl<S, T> TlsConnect<S> for GuardedTls<T>
where
    T: TlsConnect<S> + Send + 'static,
    T::Future: Send + 'static,
    T::Stream: Send,
{
    type Stream = Guarded<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let (connecting, guard) = (self.inner.connect(stream), self.guard.then(|| PasswordGuard::new(false)));
        Box::pin(async move { Ok(Guarded::new(connecting.await?, guard)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: u32) -> Vec<u8> {
        let mut m = vec![b'R', 0, 0, 0, 8];
        m.extend_from_slice(&code.to_be_bytes());
        m
    }

    #[test]
    fn cleartext_and_md5_requests_are_refused_scram_passes() {
        let mut md5 = auth(5);
        md5.extend_from_slice(b"salt");
        md5[4] = 12;
        for (bytes, refused) in [(auth(3), true), (md5, true), (auth(10), false), (auth(0), false)] {
            let result = PasswordGuard::new(false).feed(&bytes);
            assert_eq!(result.is_err(), refused, "{bytes:?}");
        }
        let err = PasswordGuard::new(false).feed(&auth(3)).unwrap_err();
        assert_eq!(err.to_string(), "the server asked for the password in clear: not sent (probes.require_scram)");
    }

    #[test]
    fn messages_split_anywhere_are_read_the_same() {
        // A SASL request (with its mechanism list), then continue, then a cleartext request.
        let mut sasl = vec![b'R', 0, 0, 0, 23, 0, 0, 0, 10];
        sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
        let mut stream = sasl.clone();
        stream.extend(auth(3));
        for cut in 1..stream.len() {
            let mut g = PasswordGuard::new(false);
            let first = g.feed(&stream[..cut]);
            let second = first.and_then(|()| g.feed(&stream[cut..]));
            assert!(second.is_err(), "cut at {cut}: the cleartext request is seen");
        }
        let mut g = PasswordGuard::new(false);
        g.feed(&sasl).unwrap();
        assert_eq!(g.state, State::Header(Vec::new()), "a whole message is skipped");
    }

    #[test]
    fn after_tls_or_authentication_everything_passes() {
        let mut tls = PasswordGuard::new(true);
        tls.feed(b"S").unwrap();
        tls.feed(&auth(3)).unwrap();
        let mut plain = PasswordGuard::new(true);
        assert!(plain.feed(&[&b"N"[..], &auth(3)].concat()).is_err(), "TLS refused: the session is read in plain");
        let mut done = PasswordGuard::new(false);
        done.feed(&auth(0)).unwrap();
        done.feed(&auth(3)).unwrap();
    }
}
