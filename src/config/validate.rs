//! From the file as written to the plan the program runs: every check that can fail is here,
//! so a [`ValidatedConfig`] is known good (a URL parses, an address has a port, a secret was
//! readable) and nothing later parses or resolves configuration again.

use std::collections::HashSet;
use std::time::Duration;

use super::tls::{self, TlsPlan, Verify};
use super::{
    invalid, BasicAuth, ChannelBinding, ClusterConfig, Config, ConfigError, ProbeConfig, Secret, SslMode, TlsConfig,
};
use crate::model::address::HostPort;
use crate::model::haproxy::Routes;
use crate::model::patroni::api_base;
use crate::model::source::Source;
use crate::model::vip::VIP_TARGET;
use crate::tasks::Pace;

/// Shortest polling interval accepted: faster would only load the targets.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Longest interval and timeout accepted: slower would not watch a failover at all.
const MAX_INTERVAL: Duration = Duration::from_secs(600);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Calm intervals when not given (or the `interval` when that is longer): the REST APIs (each
/// `GET /patroni` costs Patroni about 2 ms and makes it query PostgreSQL, about 1 ms more, on a
/// new connection, as Patroni answers HTTP/1.0); etcd and HAProxy's stats; the probes and whoami
/// pages; the write probe's calm commits.
const CALM_PATRONI: Duration = Duration::from_secs(10);
const CALM_SOURCE: Duration = Duration::from_secs(5);
const CALM_PROBE: Duration = Duration::from_secs(1);
const CALM_WRITE: Duration = Duration::from_secs(60);
/// Bounds of `calm_after`: a burst shorter than a second would end before its first rounds.
const MIN_CALM_AFTER: Duration = Duration::from_secs(1);
const MAX_CALM_AFTER: Duration = Duration::from_secs(3600);

/// The configuration the program runs: one plan per cluster.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    pub clusters: Vec<ClusterPlan>,
    /// Largest response body read from any target.
    pub max_body_bytes: usize,
}

/// Everything configured about one cluster: the one description the collectors, the probes,
/// the state and the exposition all take.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub scope: String,
    /// `<namespace>/<scope>/`: where Patroni keeps this cluster's keys.
    pub key_prefix: String,
    pub member_retention: Duration,
    /// How long a burst of fine-interval reading lasts after the last sign of change.
    pub calm_after: Duration,
    /// Most members discovery may add.
    pub max_members: usize,
    pub patroni: PatroniPlan,
    pub etcd: Option<EtcdPlan>,
    pub haproxy: Vec<HaproxyPlan>,
    pub probes: Option<ProbePlan>,
    /// The virtual IP in front of the HAProxy instances.
    pub vip: Option<VipPlan>,
    /// A digest of everything this plan was made from (the settings as written, the secrets
    /// and certificate files they name, the global body cap): equal digests, same plan. A
    /// reload keeps a cluster whose digest did not change untouched.
    pub fingerprint: [u8; 32],
}

impl ClusterPlan {
    /// The sources this cluster reads.
    pub fn sources(&self) -> Vec<Source> {
        let mut s = vec![Source::Patroni];
        if self.etcd.is_some() {
            s.push(Source::Etcd);
        }
        if !self.haproxy.is_empty() {
            s.push(Source::Haproxy);
        }
        if self.vip.is_some() {
            s.push(Source::Vip);
        }
        s
    }

    /// Direct probes of every member's PostgreSQL are on.
    pub fn direct_probes(&self) -> bool {
        self.probes.as_ref().is_some_and(|p| p.direct)
    }

    /// The write probe through HAProxy's primary port is on.
    pub fn write_probe(&self) -> bool {
        self.probes.as_ref().is_some_and(|p| p.primary.is_some())
    }

    /// The read probe through HAProxy's replicas port is on.
    pub fn read_probe(&self) -> bool {
        self.probes.as_ref().is_some_and(|p| p.replicas.is_some())
    }
}

/// How often a target is called and how long one call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polling {
    /// Between rounds after a sign of change.
    pub interval: Duration,
    pub timeout: Duration,
    /// Between rounds while the cluster is calm (at least `interval`).
    pub calm: Duration,
}

impl Polling {
    pub fn pace(&self) -> Pace {
        Pace { fine: self.interval, calm: self.calm }
    }
}

#[derive(Debug, Clone)]
pub struct PatroniPlan {
    pub members: Vec<MemberPlan>,
    /// REST base URLs whose `/cluster` lists the members.
    pub discovery_urls: Vec<String>,
    pub polling: Polling,
    pub auth: Option<BasicCredentials>,
    pub tls: Option<TlsPlan>,
}

#[derive(Debug, Clone)]
pub struct MemberPlan {
    pub name: String,
    /// Base URL of its REST API, without a trailing slash.
    pub api_url: String,
    pub postgres: Option<HostPort>,
}

#[derive(Debug, Clone)]
pub struct EtcdPlan {
    pub endpoints: Vec<String>,
    pub polling: Polling,
    pub credentials: Option<BasicCredentials>,
    pub tls: Option<TlsPlan>,
}

#[derive(Debug, Clone)]
pub struct HaproxyPlan {
    /// The `haproxy` label.
    pub name: String,
    pub stats_url: reqwest::Url,
    pub routes: Routes,
    /// Keep every backend, not only the two routes'.
    pub all_backends: bool,
    pub polling: Polling,
    pub auth: Option<BasicCredentials>,
    pub tls: Option<TlsPlan>,
}

/// The whoami pages of the virtual IP and of the instances that have one.
#[derive(Debug, Clone)]
pub struct VipPlan {
    /// The page through the virtual IP.
    pub whoami_url: WhoamiUrl,
    /// Each instance's own page: (its `haproxy` name, the page).
    pub instances: Vec<(String, WhoamiUrl)>,
    pub polling: Polling,
}

/// A plain-HTTP page's address: the host (name or IP) and port to connect to, and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoamiUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub login: PgLogin,
    /// HAProxy's primary port: the write probe.
    pub primary: Option<HostPort>,
    /// HAProxy's replicas port: the read probe.
    pub replicas: Option<HostPort>,
    pub direct: bool,
    pub polling: Polling,
    /// While calm, time between the write probe's commits (at least `polling.calm`).
    pub calm_write: Duration,
    /// Time between pings of an idle session; `None` when it is not shorter than `polling.calm`
    /// (the attempts come first).
    pub ping: Option<Duration>,
    /// The probe's own schema (lowercase letters, digits and `_`: safe to put in SQL).
    pub schema: String,
}

/// How the probes secure their PostgreSQL connections.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub sslmode: SslMode,
    /// The client setup for every mode but `disable`, verifying as the mode says.
    pub plan: Option<TlsPlan>,
    pub channel_binding: ChannelBinding,
    /// Refuse cleartext and MD5 password requests.
    pub require_scram: bool,
}

/// How the probes log in to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgLogin {
    pub user: String,
    pub password: Option<Secret>,
    pub database: String,
    pub tls: PgTls,
}

/// A user name and its resolved password.
#[derive(Debug, Clone)]
pub struct BasicCredentials {
    pub username: String,
    pub password: Secret,
}

pub(super) fn validate(config: Config) -> Result<ValidatedConfig, ConfigError> {
    if config.clusters.is_empty() {
        return Err(invalid("clusters", "at least one cluster is needed"));
    }
    if config.max_body_bytes < 1024 {
        return Err(invalid("max_body_bytes", "must be at least 1024"));
    }
    let mut scopes = HashSet::new();
    let mut clusters = Vec::new();
    for (i, c) in config.clusters.iter().enumerate() {
        let at = |f: &str| format!("clusters[{i}].{f}");
        if !scopes.insert(c.scope.as_str()) {
            return Err(invalid(at("scope"), format!("scope `{}` is configured twice", c.scope)));
        }
        let mut plan = cluster(c, &at)?;
        plan.fingerprint = fingerprint(c, &plan, config.max_body_bytes);
        clusters.push(plan);
    }
    Ok(ValidatedConfig { clusters, max_body_bytes: config.max_body_bytes })
}

fn cluster(c: &ClusterConfig, at: &dyn Fn(&str) -> String) -> Result<ClusterPlan, ConfigError> {
    if c.scope.is_empty() {
        return Err(invalid(at("scope"), "must not be empty"));
    }
    if c.max_members == 0 {
        return Err(invalid(at("max_members"), "must be at least 1"));
    }
    if !c.namespace.starts_with('/') {
        return Err(invalid(at("namespace"), "must start with `/`"));
    }
    if c.etcd.is_none() && c.patroni.members.is_empty() && c.patroni.discovery_urls.is_empty() {
        return Err(invalid(
            at("patroni"),
            "no way to find members: set `etcd`, `patroni.members` or `patroni.discovery_urls`",
        ));
    }
    Ok(ClusterPlan {
        scope: c.scope.clone(),
        key_prefix: format!("{}/{}/", c.namespace.trim_end_matches('/'), c.scope),
        member_retention: c.member_retention,
        calm_after: calm_after(&at("calm_after"), c.calm_after)?,
        max_members: c.max_members,
        patroni: patroni(c, at)?,
        etcd: etcd(c, at)?,
        haproxy: haproxy(c, at)?,
        probes: probes(c, at)?,
        vip: vip(c, at)?,
        fingerprint: [0; 32],
    })
}

/// See [`ClusterPlan::fingerprint`]. The secrets enter only the digest, never a message.
fn fingerprint(c: &ClusterConfig, plan: &ClusterPlan, max_body_bytes: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut d = Sha256::new();
    let mut part = |bytes: &[u8]| {
        d.update((bytes.len() as u64).to_be_bytes());
        d.update(bytes);
    };
    part(format!("{c:?} {max_body_bytes}").as_bytes());
    let secrets = [plan.patroni.auth.as_ref(), plan.etcd.as_ref().and_then(|e| e.credentials.as_ref())]
        .into_iter()
        .chain(plan.haproxy.iter().map(|h| h.auth.as_ref()))
        .flatten()
        .map(|b| &b.password)
        .chain(plan.probes.as_ref().and_then(|p| p.login.password.as_ref()));
    for secret in secrets {
        part(secret.expose().as_bytes());
    }
    let tls = [plan.patroni.tls.as_ref(), plan.etcd.as_ref().and_then(|e| e.tls.as_ref())]
        .into_iter()
        .chain(plan.haproxy.iter().map(|h| h.tls.as_ref()))
        .chain([plan.probes.as_ref().and_then(|p| p.login.tls.plan.as_ref())])
        .flatten();
    for t in tls {
        part(t.ca_pem.as_deref().unwrap_or_default());
        if let Some(id) = &t.identity {
            part(&id.cert_pem);
            part(&id.key_pem);
        }
    }
    d.finalize().into()
}

fn patroni(c: &ClusterConfig, at: &dyn Fn(&str) -> String) -> Result<PatroniPlan, ConfigError> {
    let p = &c.patroni;
    let mut members = Vec::new();
    for (j, m) in p.members.iter().enumerate() {
        check_url(&at(&format!("patroni.members[{j}].api_url")), &m.api_url)?;
        if m.name.is_empty() {
            return Err(invalid(at(&format!("patroni.members[{j}].name")), "must not be empty"));
        }
        let postgres =
            m.postgres.as_deref().map(|a| address(&at(&format!("patroni.members[{j}].postgres")), a)).transpose()?;
        members.push(MemberPlan {
            name: m.name.clone(),
            api_url: m.api_url.trim_end_matches('/').to_string(),
            postgres,
        });
    }
    let mut discovery_urls = Vec::new();
    for (j, u) in p.discovery_urls.iter().enumerate() {
        check_url(&at(&format!("patroni.discovery_urls[{j}]")), u)?;
        discovery_urls.push(api_base(u));
    }
    Ok(PatroniPlan {
        members,
        discovery_urls,
        polling: polling(&at("patroni"), p.interval, p.timeout, calm(p.calm_interval, CALM_PATRONI, p.interval))?,
        auth: basic(&at("patroni.basic_auth.password"), &p.basic_auth)?,
        tls: https(&at("patroni.tls"), &p.tls)?,
    })
}

fn etcd(c: &ClusterConfig, at: &dyn Fn(&str) -> String) -> Result<Option<EtcdPlan>, ConfigError> {
    let Some(e) = &c.etcd else { return Ok(None) };
    if e.endpoints.is_empty() {
        return Err(invalid(at("etcd.endpoints"), "at least one endpoint is needed"));
    }
    for (j, url) in e.endpoints.iter().enumerate() {
        check_url(&at(&format!("etcd.endpoints[{j}]")), url)?;
    }
    let credentials = match (&e.username, &e.password) {
        (Some(u), Some(p)) => {
            Some(BasicCredentials { username: u.clone(), password: p.resolve(&at("etcd.password"))? })
        }
        (None, None) => None,
        _ => return Err(invalid(at("etcd"), "set both `username` and `password`, or neither")),
    };
    if let Some(t) = &e.tls {
        if t.insecure_skip_verify {
            return Err(invalid(at("etcd.tls.insecure_skip_verify"), "not offered for etcd: give its CA in `ca_file`"));
        }
        if let Some(plain) = e.endpoints.iter().find(|u| !u.starts_with("https://")) {
            // Its credentials and reads would go in clear beside the secured ones.
            return Err(invalid(at("etcd.tls"), format!("set, but `{plain}` is not `https://`")));
        }
    }
    Ok(Some(EtcdPlan {
        endpoints: e.endpoints.clone(),
        polling: polling(&at("etcd"), e.interval, e.timeout, calm(e.calm_interval, CALM_SOURCE, e.interval))?,
        credentials,
        tls: e.tls.as_ref().map(|t| tls::plan(&at("etcd.tls"), t, Verify::Full, &[b"h2"])).transpose()?,
    }))
}

fn haproxy(c: &ClusterConfig, at: &dyn Fn(&str) -> String) -> Result<Vec<HaproxyPlan>, ConfigError> {
    let mut names = HashSet::new();
    let mut plans = Vec::new();
    for (j, h) in c.haproxy.iter().enumerate() {
        let hat = |f: &str| at(&format!("haproxy[{j}].{f}"));
        if !names.insert(h.name.as_str()) {
            return Err(invalid(hat("name"), format!("instance `{}` is configured twice", h.name)));
        }
        plans.push(HaproxyPlan {
            name: h.name.clone(),
            stats_url: check_url(&hat("stats_url"), &h.stats_url)?,
            routes: Routes { primary_backend: h.primary_backend.clone(), replicas_backend: h.replicas_backend.clone() },
            all_backends: h.all_backends,
            polling: polling(
                &at(&format!("haproxy[{j}]")),
                h.interval,
                h.timeout,
                calm(h.calm_interval, CALM_SOURCE, h.interval),
            )?,
            auth: basic(&hat("basic_auth.password"), &h.basic_auth)?,
            tls: https(&hat("tls"), &h.tls)?,
        });
    }
    Ok(plans)
}

fn vip(c: &ClusterConfig, at: &dyn Fn(&str) -> String) -> Result<Option<VipPlan>, ConfigError> {
    let pages = c.haproxy.iter().enumerate().filter_map(|(j, h)| Some((j, h, h.whoami_url.as_deref()?)));
    let Some(v) = &c.vip else {
        return match pages.map(|(j, ..)| j).next() {
            Some(j) => Err(invalid(at(&format!("haproxy[{j}].whoami_url")), "needs the cluster's `vip` section")),
            None => Ok(None),
        };
    };
    if c.haproxy.is_empty() {
        return Err(invalid(at("vip"), "needs the HAProxy instances behind it in `haproxy`"));
    }
    if let Some(j) = c.haproxy.iter().position(|h| h.name == VIP_TARGET) {
        let taken = format!("`{}` names the page read through the virtual IP: choose another", VIP_TARGET);
        return Err(invalid(at(&format!("haproxy[{j}].name")), taken));
    }
    let instances = pages
        .map(|(j, h, url)| Ok((h.name.clone(), whoami_url(&at(&format!("haproxy[{j}].whoami_url")), url)?)))
        .collect::<Result<_, ConfigError>>()?;
    Ok(Some(VipPlan {
        whoami_url: whoami_url(&at("vip.whoami_url"), &v.whoami_url)?,
        instances,
        polling: polling(&at("vip"), v.interval, v.timeout, calm(v.calm_interval, CALM_PROBE, v.interval))?,
    }))
}

/// A calm interval as given, else its default or the burst `interval` when that is longer (a
/// setting from before the calm mode, say `interval: 10s`, stays valid).
fn calm(given: Option<Duration>, default: Duration, interval: Duration) -> Duration {
    given.unwrap_or(default.max(interval))
}

fn calm_write(field: &str, every: Duration, polling: &Polling) -> Result<Duration, ConfigError> {
    if every < polling.calm || every > MAX_INTERVAL {
        return Err(invalid(field, "must be at least `calm_interval` and at most 10m"));
    }
    Ok(every)
}

fn ping(field: &str, every: Option<Duration>, polling: &Polling) -> Result<Option<Duration>, ConfigError> {
    let Some(every) = every else { return Ok(None) };
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&every) {
        return Err(invalid(field, "must be at least 50ms and at most 10m"));
    }
    Ok((every < polling.calm).then_some(every))
}

fn whoami_url(field: &str, url: &str) -> Result<WhoamiUrl, ConfigError> {
    let u = check_url(field, url)?;
    if u.scheme() != "http" {
        return Err(invalid(field, "a whoami page is read over plain HTTP: use `http://`"));
    }
    let host = u.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    Ok(WhoamiUrl { host, port: u.port_or_known_default().unwrap_or(80), path })
}

fn probes(c: &ClusterConfig, at: &dyn Fn(&str) -> String) -> Result<Option<ProbePlan>, ConfigError> {
    let Some(p) = &c.probes else { return Ok(None) };
    if p.user.is_empty() {
        return Err(invalid(at("probes.user"), "must not be empty"));
    }
    let primary = p.primary.as_deref().map(|a| address(&at("probes.primary"), a)).transpose()?;
    let replicas = p.replicas.as_deref().map(|a| address(&at("probes.replicas"), a)).transpose()?;
    if primary.is_none() && replicas.is_none() && !p.direct {
        return Err(invalid(at("probes"), "nothing to probe: set `primary`, `replicas` or `direct`"));
    }
    let polling = polling(&at("probes"), p.interval, p.timeout, calm(p.calm_interval, CALM_PROBE, p.interval))?;
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain(&p.schema) {
        return Err(invalid(at("probes.schema"), "use lowercase letters, digits and `_` only"));
    }
    let password = p.password.as_ref().map(|r| r.resolve(&at("probes.password"))).transpose()?;
    Ok(Some(ProbePlan {
        login: PgLogin { user: p.user.clone(), password, database: p.database.clone(), tls: pg_tls(&at("probes"), p)? },
        primary,
        replicas,
        direct: p.direct,
        calm_write: calm_write(
            &at("probes.calm_write_interval"),
            calm(p.calm_write_interval, CALM_WRITE, polling.calm),
            &polling,
        )?,
        ping: ping(&at("probes.ping_interval"), p.ping_interval, &polling)?,
        polling,
        schema: p.schema.clone(),
    }))
}

/// The probes' TLS: libpq's modes mapped onto rustls' checks.
fn pg_tls(at: &str, p: &ProbeConfig) -> Result<PgTls, ConfigError> {
    let verify = match p.sslmode {
        SslMode::Disable => None,
        SslMode::Prefer => Some(Verify::Nothing),
        // As libpq: `require` with a root CA given checks the chain, as `verify-ca`.
        SslMode::Require if p.tls.as_ref().is_some_and(|t| t.ca_file.is_some()) => Some(Verify::ChainOnly),
        SslMode::Require => Some(Verify::Nothing),
        SslMode::VerifyCa => Some(Verify::ChainOnly),
        SslMode::VerifyFull => Some(Verify::Full),
    };
    let given = p.tls.clone().unwrap_or_default();
    if given.insecure_skip_verify {
        return Err(invalid(format!("{at}.tls.insecure_skip_verify"), "use `sslmode: require` instead"));
    }
    if verify.is_none() && (p.tls.is_some() || p.channel_binding == ChannelBinding::Require) {
        return Err(invalid(format!("{at}.sslmode"), "is `disable`: `tls` and `channel_binding: require` need TLS"));
    }
    let plan = verify.map(|v| tls::plan(&format!("{at}.tls"), &given, v, &[])).transpose()?;
    Ok(PgTls { sslmode: p.sslmode, plan, channel_binding: p.channel_binding, require_scram: p.require_scram })
}

/// A `tls` section of an HTTPS source.
fn https(field: &str, c: &Option<TlsConfig>) -> Result<Option<TlsPlan>, ConfigError> {
    let plan = c.as_ref().map(|t| tls::plan(field, t, Verify::Full, &[b"http/1.1"])).transpose()?;
    if plan.as_ref().is_some_and(|p| p.verify == Verify::Nothing) {
        tracing::warn!(field, "insecure_skip_verify: any certificate is accepted");
    }
    Ok(plan)
}

fn basic(field: &str, auth: &Option<BasicAuth>) -> Result<Option<BasicCredentials>, ConfigError> {
    auth.as_ref()
        .map(|b| Ok(BasicCredentials { username: b.username.clone(), password: b.password.resolve(field)? }))
        .transpose()
}

fn address(field: &str, text: &str) -> Result<HostPort, ConfigError> {
    HostPort::parse(text).ok_or_else(|| invalid(field, format!("`{text}` is not host:port")))
}

fn check_url(field: &str, url: &str) -> Result<reqwest::Url, ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(invalid(
            field,
            "the URL holds credentials, which would end up in labels and logs: use basic_auth (etcd: username and password)",
        )),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(invalid(field, format!("`{url}` is not an http(s) URL with a host"))),
        Err(e) => Err(invalid(field, format!("`{url}`: {e}"))),
    }
}

fn calm_after(field: &str, after: Duration) -> Result<Duration, ConfigError> {
    if !(MIN_CALM_AFTER..=MAX_CALM_AFTER).contains(&after) {
        return Err(invalid(field, "must be at least 1s and at most 1h"));
    }
    Ok(after)
}

fn polling(at: &str, interval: Duration, timeout: Duration, calm: Duration) -> Result<Polling, ConfigError> {
    if interval < MIN_INTERVAL {
        return Err(invalid(format!("{at}.interval"), "must be at least 50ms"));
    }
    if interval > MAX_INTERVAL {
        return Err(invalid(format!("{at}.interval"), "must be at most 10m"));
    }
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(invalid(format!("{at}.timeout"), "must be above zero and at most 60s"));
    }
    if calm < interval || calm > MAX_INTERVAL {
        return Err(invalid(format!("{at}.calm_interval"), "must be at least `interval` and at most 10m"));
    }
    Ok(Polling { interval, timeout, calm })
}
