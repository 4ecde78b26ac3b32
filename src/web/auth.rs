//! Basic auth against `basic_auth_users`' bcrypt hashes. A bcrypt check costs tens of
//! milliseconds (on purpose), so a success is remembered (a digest of user, hash and password,
//! never the password) and checks run off the async threads. An unknown user costs a check too,
//! so timing does not tell which users exist. Nothing here logs what a client sent.

use std::collections::HashSet;
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::WebConfig;

/// Remembered successes, at most; past that the memory starts again.
const REMEMBERED: usize = 1024;

/// A hash checked for unknown users (cost 10, as `htpasswd -B` makes; made on first use, on a
/// blocking thread), only for its cost: an unknown user is refused whatever it says.
static NOBODY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bcrypt::hash("nobody", 10).unwrap_or_default());

#[derive(Debug)]
pub struct Authenticator {
    remembered: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt check at a time, as exporter-toolkit does: clients trying passwords cannot
    /// take every core from the collectors.
    checking: tokio::sync::Semaphore,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self { remembered: Mutex::default(), checking: tokio::sync::Semaphore::new(1) }
    }
}

impl Authenticator {
    /// Whether the `Authorization` header value `header` names a user of `config` with the
    /// right password. Always true when `config` has no users.
    pub async fn allows(&self, config: &WebConfig, header: Option<&str>) -> bool {
        if config.users.is_empty() {
            return true;
        }
        let Some((user, password)) = header.and_then(basic) else { return false };
        let Some(hash) = config.users.get(&user).cloned() else {
            // An unknown user costs a check too.
            let _turn = self.checking.acquire().await;
            let _ = tokio::task::spawn_blocking(move || bcrypt::verify(password, &NOBODY)).await;
            return false;
        };
        let key = digest(&user, &hash, &password);
        if self.lock().contains(&key) {
            return true;
        }
        let _turn = self.checking.acquire().await;
        let allowed = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if allowed {
            let mut remembered = self.lock();
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
            remembered.insert(key);
        }
        allowed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// User and password of a `Basic` authorization.
fn basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn digest(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut d = Sha256::new();
    for part in [user, hash, password] {
        d.update((part.len() as u64).to_be_bytes());
        d.update(part.as_bytes());
    }
    d.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[tokio::test]
    async fn users_are_checked_against_their_hashes_and_successes_remembered() {
        let mut config = WebConfig::default();
        let auth = Authenticator::default();
        assert!(auth.allows(&config, None).await, "no users: open");
        config.users.insert("prometheus".into(), bcrypt::hash("s3cret", 4).unwrap());
        assert!(!auth.allows(&config, None).await);
        assert!(!auth.allows(&config, Some(&header("prometheus", "wrong"))).await);
        assert!(!auth.allows(&config, Some(&header("nobody", "s3cret"))).await);
        assert!(!auth.allows(&config, Some("Bearer abc")).await);
        assert!(!auth.allows(&config, Some("Basic !!!")).await);
        assert!(auth.allows(&config, Some(&header("prometheus", "s3cret"))).await);
        assert_eq!(auth.lock().len(), 1, "the success is remembered");
        assert!(auth.allows(&config, Some(&header("prometheus", "s3cret"))).await);
        config.users.insert("prometheus".into(), bcrypt::hash("other", 4).unwrap());
        assert!(!auth.allows(&config, Some(&header("prometheus", "s3cret"))).await, "a changed hash is checked anew");
        assert!(NOBODY.parse::<bcrypt::HashParts>().is_ok(), "unknown users cost a real check");
    }
}
