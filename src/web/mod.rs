//! `--web.config.file`: TLS, client certificates, basic auth and response headers for every
//! endpoint, in the exporter-toolkit format that Prometheus exporters share, so the file an SRE
//! already writes for node_exporter works here. The file is checked at start (a bad one stops
//! the exporter); afterwards it and the certificate, key and CA files it names are looked at
//! on each new connection and request, and read again when one changed, as exporter-toolkit
//! does: a new certificate or user needs no restart. A changed file
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
/// The stamps of the file and of every file it names.
type Stamps = Vec<Option<Stamp>>;

fn stamps(path: &Path, config: &WebConfig) -> Stamps {
    std::iter::once(path).chain(config.files.iter().map(PathBuf::as_path)).map(stamp).collect()
}

#[derive(Debug)]
pub struct WebSource {
    path: Option<PathBuf>,
    current: Mutex<(Stamps, Arc<WebConfig>)>,
}

impl WebSource {
    /// No file: plain HTTP, open endpoints.
    pub fn none() -> Self {
        Self { path: None, current: Mutex::new((Vec::new(), Arc::new(WebConfig::default()))) }
    }

    /// The file at `path`, which must be valid now.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let config = file::load(path, true)?;
        let seen = stamps(path, &config);
        Ok(Self { path: Some(path.to_path_buf()), current: Mutex::new((seen, Arc::new(config))) })
    }

    /// The configuration for a new connection: read again if the file, or a certificate, key
    /// or CA file it names, changed (and still valid), else the one in force.
    pub fn current(&self) -> Arc<WebConfig> {
        let Some(path) = &self.path else { return self.lock().1.clone() };
        let mut current = self.lock();
        let seen = stamps(path, &current.1);
        if seen != current.0 {
            current.0 = seen;
            match file::load(path, false) {
                Ok(config) => {
                    tracing::info!(file = %path.display(), "web configuration read again");
                    current.0 = stamps(path, &config);
                    current.1 = Arc::new(config);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the changed web configuration is refused; the previous one stays")
                }
            }
        }
        current.1.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Stamps, Arc<WebConfig>)> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
