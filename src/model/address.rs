//! A network address as `host:port`, parsed once where it enters the program (config, Patroni's
//! keys and `/cluster`), so later code never splits strings.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// A name or an address; IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// `host:port` or `[v6]:port`; `None` when there is no host or no numeric port.
    pub fn parse(text: &str) -> Option<HostPort> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        Some(HostPort { host: host.to_string(), port: port.parse().ok()? })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_names_v4_and_v6() {
        let a = HostPort::parse("127.0.0.31:15000").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.31", 15000));
        assert_eq!(a.to_string(), "127.0.0.31:15000");
        let v6 = HostPort::parse("[::1]:5432").unwrap();
        assert_eq!((v6.host.as_str(), v6.to_string()), ("::1", "[::1]:5432".to_string()));
        for bad in ["nohost", ":5432", "h:", "h:99999", "h:x"] {
            assert_eq!(HostPort::parse(bad), None, "{bad}");
        }
    }
}
