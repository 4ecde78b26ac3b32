//! `--web.config.file`: TLS, client certificates, basic auth and response headers for every
//! endpoint, in the exporter-toolkit format that Prometheus exporters share, so the file an SRE
//! already writes for node_exporter works here. The file is checked at start (a bad one stops
//! the exporter); afterwards it is looked at on each new connection and read again when it
//! changed, as exporter-toolkit does: a new certificate or user needs no restart. A changed file
//! that does not validate is logged and the last good one kept.

pub mod auth;
pub mod file;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use file::WebConfig;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp { modified: m.modified().ok(), len: m.len() })
}

/// The web configuration in force: none (plain HTTP, no auth) or a file's latest good version.
#[derive(Debug)]
pub struct WebSource {
    path: Option<PathBuf>,
    current: Mutex<(Option<Stamp>, Arc<WebConfig>)>,
}

impl WebSource {
    /// No file: plain HTTP, open endpoints.
    pub fn none() -> Self {
        Self { path: None, current: Mutex::new((None, Arc::new(WebConfig::default()))) }
    }

    /// The file at `path`, which must be valid now.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let seen = stamp(path);
        let config = file::load(path)?;
        Ok(Self { path: Some(path.to_path_buf()), current: Mutex::new((seen, Arc::new(config))) })
    }

    /// The configuration for a new connection: the file again if it changed and still
    /// validates, else the one in force.
    pub fn current(&self) -> Arc<WebConfig> {
        let Some(path) = &self.path else { return self.lock().1.clone() };
        let seen = stamp(path);
        let mut current = self.lock();
        if seen != current.0 {
            current.0 = seen;
            match file::load(path) {
                Ok(config) => {
                    tracing::info!(file = %path.display(), "web configuration read again");
                    current.1 = Arc::new(config);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the changed web configuration is refused; the previous one stays")
                }
            }
        }
        current.1.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Stamp>, Arc<WebConfig>)> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
