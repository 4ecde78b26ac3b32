//! The YAML configuration file, as written ([`Config`]), and as the rest of the program takes
//! it ([`ValidatedConfig`]: one [`ClusterPlan`] per cluster, secrets resolved once, addresses
//! and URLs parsed).
//!
//! Every struct rejects unknown fields, so a typo is an error that names the field instead of a
//! setting silently ignored. Defaults are documented on each field and in README.md. Secrets are
//! never written in the file itself: they are named by environment variable or file and read
//! once at load time, and their values never reach a log line or a metric.

pub mod tls;
mod validate;

pub use tls::TlsPlan;
pub use validate::{
    BasicCredentials, ClusterPlan, EtcdPlan, HaproxyPlan, MemberPlan, PatroniPlan, PgLogin, PgTls, Polling, ProbePlan,
    ValidatedConfig, VipPlan, WhoamiUrl,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: field `{field}`: {message}")]
    Parse { path: PathBuf, field: String, message: String },
    #[error("field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The clusters to watch; each is independent of the others.
    pub clusters: Vec<ClusterConfig>,
    /// Largest response body read from any target, in bytes. Default 4 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Patroni's `scope`: the cluster's name, and the `scope` label of its metrics.
    pub scope: String,
    /// Patroni's DCS `namespace`. Default `/service`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// How long a member that vanished from discovery is still reported (as down). Default 10m.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub member_retention: Duration,
    /// Most members discovery may add (static members aside): a DCS or `/cluster` listing more
    /// is an error metric, not that many sockets. Default 64.
    #[serde(default = "default_max_members")]
    pub max_members: usize,
    /// Patroni REST API settings and static members.
    #[serde(default)]
    pub patroni: PatroniConfig,
    /// The DCS. When set, members are discovered from Patroni's keys in it.
    pub etcd: Option<EtcdConfig>,
    /// HAProxy instances in front of the cluster (several for a keepalived pair).
    #[serde(default)]
    pub haproxy: Vec<HaproxyConfig>,
    /// Synthetic read and write probes; off when absent.
    pub probes: Option<ProbeConfig>,
    /// The virtual IP in front of the HAProxy instances (keepalived): who holds it, read from
    /// the instances' whoami pages. Off when absent.
    pub vip: Option<VipConfig>,
    /// How long after the last sign of change (an event, a target failing or back, a closed
    /// session) every source is read at its `interval`; after that, at its `calm_interval`.
    /// Default 30s.
    #[serde(default = "default_calm_after", with = "humantime_serde")]
    pub calm_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// The whoami page through the virtual IP, e.g. `http://10.0.0.30:7001/`: it names the
    /// instance holding the address. Plain HTTP (README.md shows HAProxy's section for it).
    pub whoami_url: String,
    /// How often the whoami pages are read. Default 200ms.
    #[serde(default = "default_fast_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one read, connection included. Default 1s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the whoami pages are read while the cluster is calm. Default 1s, or
    /// `interval` when that is longer.
    #[serde(default, with = "humantime_serde")]
    pub calm_interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// PostgreSQL role the probes log in as.
    pub user: String,
    /// Its password (none for trust or peer setups).
    pub password: Option<SecretRef>,
    /// Database holding the probe's schema. Default `postgres`.
    #[serde(default = "default_probe_database")]
    pub database: String,
    /// `host:port` of HAProxy's primary port: the write probe.
    pub primary: Option<String>,
    /// `host:port` of HAProxy's replicas port: the read probe.
    pub replicas: Option<String>,
    /// Probe every member's own PostgreSQL (address from discovery). Default true.
    #[serde(default = "default_true")]
    pub direct: bool,
    /// Time between attempts after a sign of change; during a write or read outage, a new
    /// attempt starts this often even while earlier ones still wait. Default 50ms.
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Client-side deadline of one attempt (connect included). Default 1s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time between attempts while the cluster is calm. Default 1s, or `interval` when that
    /// is longer.
    #[serde(default, with = "humantime_serde")]
    pub calm_interval: Option<Duration>,
    /// While the cluster is calm, how often the write probe commits; its other calm attempts
    /// ask the primary through HAProxy whether it is in recovery, which writes nothing (every
    /// commit moves the WAL, and each Patroni member then rewrites its key in etcd at its next
    /// loop). The direct probes commit as often, and not at all while the write probe's
    /// commits succeed and only one member is writable. Default 60s, or `calm_interval` when
    /// that is longer.
    #[serde(default, with = "humantime_serde")]
    pub calm_write_interval: Option<Duration>,
    /// How often a probe's open session (the write probe's through HAProxy, each direct
    /// probe's) is sent an empty query between attempts, answered within `timeout`. A frozen
    /// server, or a path that silently drops packets, closes nothing: without pings it is found
    /// at the next attempt, up to `calm_interval` later. Not set by default: on the lab, pings
    /// every 200ms cost about 19 CPU-s an hour (the exporter's wakeups and each server's), as
    /// much as everything else the exporter does while calm. At `calm_interval` or longer, none.
    #[serde(default, with = "humantime_serde")]
    pub ping_interval: Option<Duration>,
    /// The probe's own schema; it holds one table, `heartbeat`. Default `pgha_probe`.
    #[serde(default = "default_probe_schema")]
    pub schema: String,
    /// As libpq's: `disable`, `prefer` (the default), `require` (encrypted, any certificate),
    /// `verify-ca` (the chain is checked) or `verify-full` (the chain and the name).
    #[serde(default)]
    pub sslmode: SslMode,
    /// CA (libpq's sslrootcert), client certificate and key, and the name the server's
    /// certificate must carry (`server_name`: through HAProxy the address is HAProxy's).
    pub tls: Option<TlsConfig>,
    /// As libpq's: `disable`, `prefer` (the default) or `require` (SCRAM with channel binding
    /// only: the password is never sent to a server that did not prove its certificate).
    #[serde(default)]
    pub channel_binding: ChannelBinding,
    /// Never answer a server that asks for the password in clear or as MD5: only SCRAM, which
    /// never sends the password itself. Default false, as libpq; the safe setting when every
    /// server's pg_hba.conf uses `scram-sha-256` for the probe role.
    #[serde(default)]
    pub require_scram: bool,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelBinding {
    Disable,
    #[default]
    Prefer,
    Require,
}

/// TLS toward a target, as Prometheus's `tls_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) the target's certificate must chain to. Default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for targets that require one.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name the target's certificate must carry, when not the address's host.
    pub server_name: Option<String>,
    /// Accept any certificate (still encrypted): self-signed test setups only. Default false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniConfig {
    /// Members always watched, whatever discovery says.
    #[serde(default)]
    pub members: Vec<StaticMember>,
    /// Patroni REST URLs whose `/cluster` lists the members, when etcd is not configured.
    #[serde(default)]
    pub discovery_urls: Vec<String>,
    /// How often each member's own `GET /patroni` is read. Default 200ms.
    #[serde(default = "default_fast_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one REST call. Default 1s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often each member's own `GET /patroni` (and discovery's `/cluster`) is read while
    /// the cluster is calm. Default 10s, or `interval` when that is longer.
    #[serde(default, with = "humantime_serde")]
    pub calm_interval: Option<Duration>,
    /// HTTP basic auth for the REST API, if it requires it.
    pub basic_auth: Option<BasicAuth>,
    /// TLS toward `https` REST APIs (CA, client certificate for `restapi.verify_client`).
    pub tls: Option<TlsConfig>,
}

impl Default for PatroniConfig {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            discovery_urls: Vec::new(),
            interval: default_fast_interval(),
            timeout: default_timeout(),
            calm_interval: None,
            basic_auth: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMember {
    /// Patroni's member name.
    pub name: String,
    /// Base URL of its REST API, e.g. `http://10.0.0.1:8008`.
    pub api_url: String,
    /// Its PostgreSQL `host:port`, used to match HAProxy servers to members.
    pub postgres: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, each read on its own.
    pub endpoints: Vec<String>,
    /// How often each member is read. Default 200ms.
    #[serde(default = "default_fast_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one etcd call. Default 1s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often each member's status is read while the cluster is calm; the leader key's
    /// watch stays on. Default 5s, or `interval` when that is longer.
    #[serde(default, with = "humantime_serde")]
    pub calm_interval: Option<Duration>,
    /// etcd user name, when authentication is on.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<SecretRef>,
    /// TLS toward `https` endpoints (CA, client certificate for `--client-cert-auth`).
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// Name of this instance: the `haproxy` label. Default `haproxy`.
    #[serde(default = "default_haproxy_name")]
    pub name: String,
    /// URL of the stats page in CSV form, e.g. `http://10.0.0.5:7000/;csv`.
    pub stats_url: String,
    /// The backend (or listen section) that routes to the primary. Default `primary`.
    #[serde(default = "default_primary_backend")]
    pub primary_backend: String,
    /// The backend that routes to the replicas. Default `replicas`.
    #[serde(default = "default_replicas_backend")]
    pub replicas_backend: String,
    /// How often the stats are read. Default 200ms.
    #[serde(default = "default_fast_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one stats request. Default 1s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the stats are read while the cluster is calm. Default 5s, or `interval` when
    /// that is longer.
    #[serde(default, with = "humantime_serde")]
    pub calm_interval: Option<Duration>,
    /// HTTP basic auth of the stats page.
    pub basic_auth: Option<BasicAuth>,
    /// Export every backend and server of the stats page, not only the primary and replicas
    /// backends. Default false: an HAProxy with thousands of other servers costs nothing.
    #[serde(default)]
    pub all_backends: bool,
    /// TLS toward an `https` stats page.
    pub tls: Option<TlsConfig>,
    /// This instance's own whoami page (its VRRP state), at its own address, e.g.
    /// `http://10.0.0.5:7001/`. Needs the cluster's `vip` section.
    pub whoami_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretRef,
}

/// Where a secret comes from: exactly one of an environment variable or a file.
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// A secret written inline is refused without being echoed: serde's own error would quote it.
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        let value = serde_norway::Value::deserialize(d)?;
        if !value.is_mapping() {
            return Err(serde::de::Error::custom(
                "a secret is never written in the configuration: use {env: VARIABLE} or {file: PATH}",
            ));
        }
        let f: Fields = serde_norway::from_value(value).map_err(serde::de::Error::custom)?;
        Ok(SecretRef { env: f.env, file: f.file })
    }
}

/// A secret's value. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl SecretRef {
    pub fn resolve(&self, field: &str) -> Result<Secret, ConfigError> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(Secret)
                .map_err(|_| invalid(field, format!("environment variable {var} is not set"))),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display()))),
            _ => Err(invalid(field, "give exactly one of `env` or `file`")),
        }
    }
}

fn default_probe_database() -> String {
    "postgres".into()
}
fn default_true() -> bool {
    true
}
fn default_probe_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_calm_after() -> Duration {
    Duration::from_secs(30)
}
fn default_probe_schema() -> String {
    "pgha_probe".into()
}
fn default_max_body_bytes() -> usize {
    4 << 20
}
fn default_namespace() -> String {
    "/service".into()
}
fn default_max_members() -> usize {
    64
}
fn default_retention() -> Duration {
    Duration::from_secs(600)
}
/// Patroni, etcd and HAProxy are polled this often by default: fast enough for the failover
/// timeline's 200 ms resolution, cheap on loopback (see README's cost figures).
fn default_fast_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_haproxy_name() -> String {
    "haproxy".into()
}
fn default_primary_backend() -> String {
    "primary".into()
}
fn default_replicas_backend() -> String {
    "replicas".into()
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<ValidatedConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { field, message, .. } => {
                ConfigError::Parse { path: path.to_path_buf(), field, message }
            }
            other => other,
        })
    }

    /// Parses and validates; secrets are read here, once.
    pub fn parse(text: &str) -> Result<ValidatedConfig, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Parse { path: PathBuf::new(), field, message: e.into_inner().to_string() }
        })?;
        validate::validate(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "clusters:\n  - scope: demo\n    etcd:\n      endpoints: [http://127.0.0.11:2379]\n";

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        let cl = &c.clusters[0];
        assert_eq!(cl.key_prefix, "/service/demo/");
        assert_eq!(cl.member_retention, Duration::from_secs(600));
        assert_eq!(
            cl.patroni.polling,
            Polling {
                interval: Duration::from_millis(200),
                timeout: Duration::from_secs(1),
                calm: Duration::from_secs(10)
            }
        );
        assert_eq!(cl.etcd.as_ref().unwrap().polling.interval, Duration::from_millis(200));
        assert!(cl.probes.is_none() && cl.haproxy.is_empty());
        assert_eq!(c.max_body_bytes, 4 << 20);
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = "clusters:\n  - scope: demo\n    haproxy:\n      - stats_url: http://h:7000/;csv\n        intervall: 1s\n    etcd: {endpoints: [http://e:2379]}\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("clusters[0].haproxy[0]"), "{err}");
        assert!(err.contains("intervall"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("clusters: []\n", "clusters"),
            ("clusters:\n  - scope: demo\n", "clusters[0].patroni"),
            (
                "clusters:\n  - scope: demo\n    etcd: {endpoints: ['not a url']}\n",
                "clusters[0].etcd.endpoints[0]",
            ),
            (
                "clusters:\n  - scope: demo\n    etcd: {endpoints: [http://e:2379], interval: 1ms}\n",
                "clusters[0].etcd.interval",
            ),
            (
                "clusters:\n  - {scope: a, etcd: {endpoints: [http://e:1]}}\n  - {scope: a, etcd: {endpoints: [http://e:1]}}\n",
                "clusters[1].scope",
            ),
            (
                "clusters:\n  - scope: a\n    etcd: {endpoints: [http://e:1], username: u, password: {env: PGHA_TEST_SURELY_UNSET}}\n",
                "clusters[0].etcd.password",
            ),
            (
                "clusters:\n  - scope: a\n    etcd: {endpoints: [http://e:1]}\n    patroni: {timeout: soon}\n",
                "clusters[0].patroni.timeout",
            ),
            (
                "clusters:\n  - scope: a\n    etcd: {endpoints: [http://e:1]}\n    probes: {user: app, primary: 'nohost'}\n",
                "clusters[0].probes.primary",
            ),
            (
                "clusters:\n  - scope: a\n    etcd: {endpoints: [http://e:1]}\n    probes: {user: app, schema: 'x; drop table y'}\n",
                "clusters[0].probes.schema",
            ),
        ];
        for (text, field) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{text:?} gave {err}");
        }
    }

    #[test]
    fn the_virtual_ip_needs_its_instances_and_plain_http_pages() {
        let h = "    haproxy:\n      - {stats_url: 'http://h:7000/;csv', whoami_url: 'http://h:7001/'}\n";
        let cases = [
            (h.to_string(), "`clusters[0].haproxy[0].whoami_url`: needs the cluster's `vip` section"),
            (
                "    vip: {whoami_url: 'http://v:7001/'}\n".into(),
                "`clusters[0].vip`: needs the HAProxy instances behind it in `haproxy`",
            ),
            (
                format!("{h}    vip: {{whoami_url: 'https://v:7001/'}}\n"),
                "`clusters[0].vip.whoami_url`: a whoami page is read over plain HTTP: use `http://`",
            ),
            (
                format!("{h}    vip: {{whoami_url: 'http://v:7001/', interval: 1ms}}\n"),
                "`clusters[0].vip.interval`: must be at least 50ms",
            ),
            (format!("{h}    vip: {{whoami_url: 'http://v:7001/', tls: {{}}}}\n"), "unknown field `tls`"),
            (
                "    haproxy: [{name: vip, stats_url: 'http://h:7000/;csv'}]\n    vip: {whoami_url: 'http://v:7001/'}\n".into(),
                "`clusters[0].haproxy[0].name`: `vip` names the page read through the virtual IP: choose another",
            ),
        ];
        for (cluster, want) in cases {
            let text = format!("clusters:\n  - scope: a\n    etcd: {{endpoints: ['http://e:1']}}\n{cluster}");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text} gave {err}");
        }
        let text = format!("clusters:\n  - scope: a\n    etcd: {{endpoints: ['http://e:1']}}\n{h}    vip: {{whoami_url: 'http://[::1]:7001/who?x'}}\n");
        let vip = Config::parse(&text).unwrap().clusters.remove(0).vip.unwrap();
        assert_eq!(vip.whoami_url, WhoamiUrl { host: "::1".into(), port: 7001, path: "/who?x".into() });
        assert_eq!(
            vip.instances,
            [("haproxy".to_string(), WhoamiUrl { host: "h".into(), port: 7001, path: "/".into() })]
        );
        assert_eq!(
            vip.polling,
            Polling {
                interval: Duration::from_millis(200),
                timeout: Duration::from_secs(1),
                calm: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn an_inline_secret_is_refused_without_being_echoed() {
        let text =
            "clusters:\n  - scope: a\n    etcd: {endpoints: ['http://e:1'], username: u, password: s3cret-inline}\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("clusters[0].etcd.password") && err.contains("{env: VARIABLE}"), "{err}");
        let typo = "clusters:\n  - scope: a\n    etcd: {endpoints: ['http://e:1'], username: u, password: {envv: X}}\n";
        let err = Config::parse(typo).unwrap_err().to_string();
        assert!(err.contains("envv"), "a typo is still named: {err}");
    }

    #[test]
    fn credentials_in_urls_and_unbounded_timing_are_refused() {
        let cases = [
            (
                "patroni: {members: [{name: m, api_url: 'http://u:pw@m:8008'}]}",
                "clusters[0].patroni.members[0].api_url",
            ),
            ("etcd: {endpoints: ['http://root:pw@e:2379']}", "clusters[0].etcd.endpoints[0]"),
            ("etcd: {endpoints: ['http://e:2379'], interval: 2h}", "clusters[0].etcd.interval"),
            ("etcd: {endpoints: ['http://e:2379'], timeout: 5m}", "clusters[0].etcd.timeout"),
        ];
        for (cluster, field) in cases {
            let text = format!("clusters:\n  - scope: a\n    {cluster}\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{text} gave {err}");
            assert!(!err.contains("pw"), "the password is not echoed: {err}");
        }
    }

    #[test]
    fn calm_intervals_are_no_shorter_than_the_burst_ones() {
        let cases = [
            ("etcd: {endpoints: ['http://e:2379'], interval: 2s, calm_interval: 1s}", "clusters[0].etcd.calm_interval"),
            ("etcd: {endpoints: ['http://e:2379']}\n    patroni: {calm_interval: 100ms}", "clusters[0].patroni.calm_interval"),
            (
                "etcd: {endpoints: ['http://e:2379']}\n    probes: {user: u, primary: 'h:1', calm_write_interval: 500ms}",
                "clusters[0].probes.calm_write_interval",
            ),
        ];
        for (cluster, field) in cases {
            let text = format!("clusters:\n  - scope: a\n    {cluster}\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.ends_with(&format!(
                    "`{field}`: must be at least {}",
                    if field.ends_with("write_interval") {
                        "`calm_interval` and at most 10m"
                    } else {
                        "`interval` and at most 10m"
                    }
                )),
                "{text} gave {err}"
            );
        }
        let text = "clusters:\n  - scope: a\n    etcd: {endpoints: ['http://e:2379']}\n    probes: {user: u, primary: 'h:1'}\n";
        let plan = &Config::parse(text).unwrap().clusters[0];
        let probes = plan.probes.as_ref().unwrap();
        assert_eq!((probes.polling.interval, probes.polling.calm), (Duration::from_millis(50), Duration::from_secs(1)));
        assert_eq!((probes.calm_write, plan.calm_after), (Duration::from_secs(60), Duration::from_secs(30)));
        assert_eq!(plan.patroni.polling.calm, Duration::from_secs(10));
    }

    #[test]
    fn long_intervals_from_before_the_calm_mode_stay_valid() {
        let text = "clusters:\n  - scope: a\n    etcd: {endpoints: ['http://e:2379'], interval: 10s}\n    \
            haproxy: [{stats_url: 'http://h:1/', whoami_url: 'http://h:2/'}]\n    vip: {whoami_url: 'http://v:2/', interval: 2s}\n    \
            probes: {user: u, primary: 'h:1', interval: 2s, calm_interval: 90s}\n";
        let plan = &Config::parse(text).unwrap().clusters[0];
        let (etcd, vip, probes) =
            (plan.etcd.as_ref().unwrap(), plan.vip.as_ref().unwrap(), plan.probes.as_ref().unwrap());
        assert_eq!((etcd.polling.interval, etcd.polling.calm), (Duration::from_secs(10), Duration::from_secs(10)));
        assert_eq!((vip.polling.interval, vip.polling.calm), (Duration::from_secs(2), Duration::from_secs(2)));
        // A given calm interval longer than the commits' default carries them along.
        assert_eq!((probes.polling.calm, probes.calm_write), (Duration::from_secs(90), Duration::from_secs(90)));
        assert_eq!(plan.haproxy[0].polling.calm, Duration::from_secs(5));
    }

    #[test]
    fn pings_run_between_calm_attempts_only_when_shorter_than_them() {
        let probes = |extra: &str| {
            let text = format!(
                "clusters:\n  - scope: a\n    etcd: {{endpoints: ['http://e:2379']}}\n    probes: {{user: u, primary: 'h:1'{extra}}}\n"
            );
            Config::parse(&text).map(|c| c.clusters[0].probes.clone().unwrap().ping)
        };
        assert_eq!(probes("").unwrap(), None, "no pings unless asked for");
        assert_eq!(probes(", ping_interval: 200ms").unwrap(), Some(Duration::from_millis(200)));
        assert_eq!(probes(", ping_interval: 1s").unwrap(), None, "the calm attempts come first");
        assert_eq!(probes(", calm_interval: 5s, ping_interval: 1s").unwrap(), Some(Duration::from_secs(1)));
        for bad in ["10ms", "11m"] {
            let err = probes(&format!(", ping_interval: {bad}")).unwrap_err().to_string();
            assert!(
                err.ends_with("`clusters[0].probes.ping_interval`: must be at least 50ms and at most 10m"),
                "{bad} gave {err}"
            );
        }
    }

    #[test]
    fn calm_after_is_bounded() {
        for after in ["0s", "500ms", "2h"] {
            let text = format!(
                "clusters:\n  - scope: a\n    calm_after: {after}\n    etcd: {{endpoints: ['http://e:2379']}}\n"
            );
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.ends_with("`clusters[0].calm_after`: must be at least 1s and at most 1h"),
                "{after} gave {err}"
            );
        }
    }

    #[test]
    fn secret_from_file_is_read_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("pgha-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let r = SecretRef { env: None, file: Some(file) };
        let s = r.resolve("x").unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_naming_the_field() {
        let e = "etcd: {endpoints: ['https://e:2379']";
        let cases = [
            (format!("{e}, tls: {{insecure_skip_verify: true}}}}"), "clusters[0].etcd.tls.insecure_skip_verify"),
            ("etcd: {endpoints: ['http://e:2379'], tls: {}}".to_string(), "clusters[0].etcd.tls"),
            (format!("{e}, tls: {{cert_file: /c.pem}}}}"), "clusters[0].etcd.tls"),
            (format!("{e}, tls: {{ca_file: /nonexistent/ca.pem}}}}"), "clusters[0].etcd.tls.ca_file"),
            (format!("{e}, tls: {{ca_file: /dev/null}}}}"), "clusters[0].etcd.tls.ca_file"),
            (format!("{e}, tls: {{server_name: 'a b'}}}}"), "clusters[0].etcd.tls.server_name"),
            (
                format!("{e}}}\n    probes: {{user: u, primary: 'h:1', sslmode: disable, tls: {{}}}}"),
                "clusters[0].probes.sslmode",
            ),
            (
                format!("{e}}}\n    probes: {{user: u, primary: 'h:1', sslmode: disable, channel_binding: require}}"),
                "clusters[0].probes.sslmode",
            ),
            (
                format!("{e}}}\n    probes: {{user: u, primary: 'h:1', tls: {{insecure_skip_verify: true}}}}"),
                "clusters[0].probes.tls.insecure_skip_verify",
            ),
        ];
        for (cluster, field) in cases {
            let text = format!("clusters:\n  - scope: a\n    {cluster}\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{text} gave {err}");
        }
        let err = Config::parse(
            "clusters:\n  - scope: a\n    etcd: {endpoints: ['https://e:1'], tls: {ca_file: /dev/null}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.ends_with("holds no PEM certificate"), "{err}");
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let text = format!(
            "clusters:\n  - scope: a\n    patroni: {{members: [{{name: m, api_url: 'https://m:1'}}], \
             tls: {{cert_file: {fixtures}/client.crt, key_file: {fixtures}/server.key}}}}\n"
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("`clusters[0].patroni.tls.key_file`: does not fit the certificate"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }

    #[test]
    fn sslmodes_map_to_the_checks_libpq_makes() {
        use tls::Verify;
        let mode = |m: &str| {
            let text = format!("clusters:\n  - scope: a\n    etcd: {{endpoints: ['http://e:1']}}\n    probes: {{user: u, primary: 'h:1', sslmode: {m}}}\n");
            let tls = Config::parse(&text).unwrap().clusters.remove(0).probes.unwrap().login.tls;
            (tls.sslmode, tls.plan.map(|p| p.verify))
        };
        assert_eq!(mode("disable"), (SslMode::Disable, None));
        assert_eq!(mode("prefer"), (SslMode::Prefer, Some(Verify::Nothing)));
        assert_eq!(mode("require"), (SslMode::Require, Some(Verify::Nothing)));
        assert_eq!(mode("verify-ca"), (SslMode::VerifyCa, Some(Verify::ChainOnly)));
        assert_eq!(mode("verify-full"), (SslMode::VerifyFull, Some(Verify::Full)));
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        assert_eq!(
            mode(&format!("require, tls: {{ca_file: {fixtures}/ca.crt}}")),
            (SslMode::Require, Some(Verify::ChainOnly)),
            "as libpq with a root certificate"
        );
        let text = "clusters:\n  - scope: a\n    etcd: {endpoints: ['http://e:1']}\n    probes: {user: u, primary: 'h:1', sslmode: verify_full}\n";
        assert!(Config::parse(text).unwrap_err().to_string().contains("verify-full"), "libpq's spelling is asked for");
    }
}
