//! The exporter against the TLS lab (`compose/local/lab up --tls`): etcd with client-certificate
//! auth and users, Patroni's REST API with `verify_client: required`, PostgreSQL with `hostssl`
//! rules, HAProxy's stats over https. The healthy truth, a leader failover with its phases and
//! write downtime, and a quorum loss are read over TLS; a wrong CA, an expired and a missing
//! client certificate each give kind `tls` and a log line; `verify-full` with a wrong
//! `server_name` fails where `require` succeeds. Its own test binary: the lab's addresses are
//! the plain lab's, so the two never run at once (cargo runs test binaries one after another).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::steps::Steps;
use support::writer::Writer;
use support::*;

const SCOPE: &str = "demo";
const MEMBERS: &str = "
      members:
        - {name: node1, api_url: 'https://127.0.0.21:18008'}
        - {name: node2, api_url: 'https://127.0.0.22:18008'}
        - {name: node3, api_url: 'https://127.0.0.23:18008'}";
const ETCD: [&str; 3] = ["https://127.0.0.11:12379", "https://127.0.0.12:12379", "https://127.0.0.13:12379"];

/// The TLS files and secrets `lab env` names.
struct LabTls(BTreeMap<String, String>);

impl LabTls {
    fn read() -> Self {
        let env = lab(&["env"]);
        let pairs =
            env.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string()));
        LabTls(pairs.collect())
    }

    fn path(&self, key: &str) -> String {
        self.0.get(key).unwrap_or_else(|| panic!("`lab env` names no `{key}`: {:?}", self.0)).clone()
    }
}

/// What one exporter is given: its client certificate (none, the good one, the expired one) and
/// its CA, and the probes' TLS.
struct Variant {
    ca: String,
    client: Option<(String, String)>,
    sslmode: &'static str,
    server_name: Option<String>,
    /// List the members too, so Patroni is called even when etcd (discovery) refuses us.
    static_members: bool,
}

fn config(files: &LabTls, v: &Variant) -> String {
    let client = match &v.client {
        Some((cert, key)) => format!(", cert_file: {cert}, key_file: {key}"),
        None => String::new(),
    };
    let tls = format!("{{ca_file: {}{client}}}", v.ca);
    let server_name = v.server_name.as_ref().map(|n| format!(", server_name: {n}")).unwrap_or_default();
    format!(
        r#"
clusters:
  - scope: {SCOPE}
    etcd:
      endpoints: [{etcd}]
      tls: {tls}
      username: pgha
      password: {{file: {etcd_password}}}
    patroni:
      tls: {tls}{members}
    haproxy:
      - name: haproxy
        stats_url: "https://127.0.0.31:17000/;csv"
        tls: {{ca_file: {ca}}}
    probes:
      user: app
      password: {{env: PGHA_PROBE_PASSWORD}}
      database: app
      primary: 127.0.0.31:15000
      replicas: 127.0.0.31:15001
      interval: 100ms
      timeout: 500ms
      sslmode: {sslmode}
      tls: {{ca_file: {ca}{server_name}}}
      channel_binding: {binding}
      require_scram: true
"#,
        etcd = ETCD.join(", "),
        members = if v.static_members { MEMBERS } else { "" },
        etcd_password = files.path("etcd password"),
        ca = v.ca,
        sslmode = v.sslmode,
        binding = if v.sslmode == "disable" { "disable" } else { "require" },
    )
}

fn good(files: &LabTls) -> Variant {
    Variant {
        ca: files.path("ca"),
        client: Some((files.path("client cert"), files.path("client key"))),
        sslmode: "verify-ca",
        server_name: None,
        static_members: false,
    }
}

#[test]
#[ignore = "needs the lab (root, Debian's etcd, patroni, haproxy, postgresql): run compose/local/test"]
fn exporter_reads_the_tls_lab() {
    let log = std::env::temp_dir().join(format!("pgha-it-tls-exporter-{}.log", std::process::id()));
    let _lab = LabGuard::up_with(log.clone(), &["up", "--tls"]);
    let files = LabTls::read();
    let exporter = Exporter::start(&config(&files, &good(&files)), &log);
    let mut steps = Steps::new(log.clone());
    let healed = || heal(&exporter);
    steps.run("healthy over TLS", || healthy(&exporter), healed);
    steps.run("leader failover over TLS", || leader_failover(&exporter, &files), healed);
    steps.run("healed after the failover", healed, healed);
    steps.run("etcd quorum lost over TLS", || quorum_lost(&exporter), healed);
    steps.run("healed after etcd", healed, healed);
    steps.run("a wrong CA", || wrong_ca(&files), || {});
    steps.run("an expired client certificate", || expired_client(&files), || {});
    steps.run("no client certificate", || no_client(&files), || {});
    steps.run("verify-full with a wrong server name, require", || server_name(&files), || {});
    steps.run("no secret in a debug log of the TLS lab", || no_secret_at_debug(&files), || {});
    steps.finish();
}

fn heal(exporter: &Exporter) {
    lab(&["heal", "120"]);
    wait_until("the exporter sees a healthy cluster", Duration::from_secs(30), || {
        let m = exporter.scrape();
        (m.leader(SCOPE).is_some()
            && m.get("pgha_cluster_members_running", &[("scope", SCOPE)]) == Some(3.0)
            && m.get("pgha_etcd_cluster_members_healthy", &[("scope", SCOPE)]) == Some(3.0))
        .then_some(())
    });
}

fn healthy(exporter: &Exporter) {
    let m = wait_until("leader, 3 running members, 2 replicas routed", Duration::from_secs(30), || {
        let m = exporter.scrape();
        (m.leader(SCOPE).is_some()
            && m.get("pgha_cluster_members_running", &[("scope", SCOPE)]) == Some(3.0)
            && m.members_where(
                "pgha_haproxy_server_status",
                &[("status", "up"), ("scope", SCOPE), ("route", "replicas")],
            )
            .len()
                == 2
            && m.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]) == Some(1.0)
            && m.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "read")]) == Some(1.0))
        .then_some(m)
    });
    let leader = m.leader(SCOPE).unwrap();
    assert_eq!(m.get("pgha_etcd_cluster_members_healthy", &[("scope", SCOPE)]), Some(3.0));
    assert_eq!(m.get("pgha_etcd_quorum", &[("scope", SCOPE)]), Some(1.0));
    assert_eq!(m.members_where("pgha_patroni_leader_key_info", &[("scope", SCOPE)]), vec![leader.clone()]);
    assert_eq!(
        m.members_where("pgha_haproxy_server_status", &[("status", "up"), ("scope", SCOPE), ("route", "primary")]),
        vec![leader]
    );
    for source in ["patroni", "etcd", "haproxy"] {
        let up = m.find("pgha_source_up", &[("scope", SCOPE), ("source", source)]);
        assert!(!up.is_empty() && up.iter().all(|s| s.value == 1.0), "{source}: {up:?}");
    }
    for s in m.find("pgha_patroni_member_info", &[("scope", SCOPE)]) {
        assert!(s.labels["api_url"].starts_with("https://"), "discovered over https: {:?}", s.labels);
    }
    let direct = wait_until("every member's own PostgreSQL answered", Duration::from_secs(10), || {
        let direct = exporter
            .scrape()
            .find("pgha_member_postgres_up", &[("scope", SCOPE)])
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        (direct.len() == 3 && direct.iter().all(|s| s.value == 1.0)).then_some(direct)
    });
    eprintln!("direct probes over TLS: {:?}", direct.iter().map(|s| &s.labels["member"]).collect::<Vec<_>>());
}

fn writer_tls(files: &LabTls) -> rustls::ClientConfig {
    use pgha_exporter::config::tls::{plan, Verify};
    let given =
        pgha_exporter::config::TlsConfig { ca_file: Some(PathBuf::from(files.path("ca"))), ..Default::default() };
    rustls::ClientConfig::clone(&plan("writer", &given, Verify::ChainOnly, &[]).unwrap().rustls)
}

fn counter(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.find(name, labels).iter().map(|s| s.value).sum()
}

fn leader_failover(exporter: &Exporter, files: &LabTls) {
    let writer = Writer::start_with(Some(writer_tls(files)));
    wait_until("the writer commits over TLS", Duration::from_secs(10), || {
        (writer.successes_since(Instant::now() - Duration::from_secs(1)) > 5).then_some(())
    });
    let m = exporter.scrape();
    let old = m.leader(SCOPE).unwrap();
    let before = counter(&m, "pgha_failovers_total", &[("scope", SCOPE), ("kind", "unplanned")]);
    let stopped_at = Instant::now();
    lab(&["stop", &old]);
    let m = wait_until("one more unplanned failover", Duration::from_secs(40), || {
        let m = exporter.scrape();
        (counter(&m, "pgha_failovers_total", &[("scope", SCOPE), ("kind", "unplanned")]) > before).then_some(m)
    });
    let new = m.leader(SCOPE).expect("a new leader");
    assert_ne!(new, old);
    let theirs = wait_until("the writer's outage ended", Duration::from_secs(10), || writer.outage_after(stopped_at));
    let ours = m.get("pgha_last_failover_write_downtime_seconds", &[("scope", SCOPE)]).expect("write downtime");
    let phases = m.find("pgha_last_failover_phase_seconds", &[("scope", SCOPE)]);
    eprintln!(
        "TLS failover {old} -> {new}: exporter write downtime {ours:.3}s, writer {:.3}s; phases {:?}",
        theirs.as_secs_f64(),
        phases.iter().map(|s| (s.labels["phase"].clone(), s.value)).collect::<Vec<_>>()
    );
    assert!(phases.len() >= 3, "the failover's phases: {phases:?}");
    assert!((ours - theirs.as_secs_f64()).abs() <= 0.5, "exporter {ours:.3}s vs writer {:.3}s", theirs.as_secs_f64());
}

fn quorum_lost(exporter: &Exporter) {
    let old = exporter.scrape().leader(SCOPE).unwrap();
    lab(&["stop", "etcd1", "etcd2"]);
    wait_until("quorum reported lost", Duration::from_secs(10), || {
        (exporter.scrape().get("pgha_etcd_quorum", &[("scope", SCOPE)]) == Some(0.0)).then_some(())
    });
    let survivor = [("scope", SCOPE), ("etcd_endpoint", ETCD[2])];
    wait_until("the survivor answers and has no leader", Duration::from_secs(5), || {
        let m = exporter.scrape();
        (m.get("pgha_source_up", &[("scope", SCOPE), ("source", "etcd"), ("target", ETCD[2])]) == Some(1.0)
            && m.get("pgha_etcd_member_has_leader", &survivor) == Some(0.0))
        .then_some(())
    });
    let m = wait_until("the former primary reports itself demoted", Duration::from_secs(40), || {
        let m = exporter.scrape();
        let own = |role| m.get("pgha_patroni_member_role", &[("scope", SCOPE), ("member", &old), ("role", role)]);
        (own("primary") == Some(0.0) && own("replica") == Some(1.0)).then_some(m)
    });
    assert_eq!(m.get("pgha_cluster_primaries", &[("scope", SCOPE)]), Some(0.0));
}

/// A second exporter with `variant`, until every source of `sources` is down with kind `tls`
/// and each has a log line giving the reason; returns the log.
fn refused(files: &LabTls, name: &str, variant: &Variant, sources: &[&str], reason: &str) -> String {
    let log = std::env::temp_dir().join(format!("pgha-it-tls-{name}-{}.log", std::process::id()));
    let exporter = Exporter::start(&config(files, variant), &log);
    wait_until(&format!("{sources:?} down with kind tls"), Duration::from_secs(15), || {
        let m = exporter.scrape();
        sources
            .iter()
            .all(|source| {
                let up = m.find("pgha_source_up", &[("scope", SCOPE), ("source", source)]);
                let tls =
                    counter(&m, "pgha_source_errors_total", &[("scope", SCOPE), ("source", source), ("kind", "tls")]);
                !up.is_empty() && up.iter().all(|s| s.value == 0.0) && tls > 0.0
            })
            .then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    for source in sources {
        let source_label = format!("source=\"{source}\"");
        assert!(
            text.lines().any(|l| l.contains(&source_label) && l.contains("kind=\"tls\"") && l.contains(reason)),
            "a log line for {source} saying {reason}:\n{text:.4000}"
        );
    }
    text
}

fn wrong_ca(files: &LabTls) {
    let v = Variant { ca: files.path("wrong ca"), static_members: true, ..good(files) };
    refused(files, "wrong-ca", &v, &["etcd", "patroni", "haproxy"], "UnknownIssuer");
}

fn expired_client(files: &LabTls) {
    let expired = Some((files.path("expired cert"), files.path("expired key")));
    let v = Variant { client: expired, static_members: true, ..good(files) };
    refused(files, "expired", &v, &["etcd", "patroni"], "alert");
}

fn no_client(files: &LabTls) {
    let v = Variant { client: None, static_members: true, ..good(files) };
    refused(files, "no-client", &v, &["etcd", "patroni"], "alert");
}

/// Through HAProxy the certificate is a member's: `verify-full` with a name none carries fails
/// as `tls`, `require` (no check) and `verify-full` with a member's name succeed.
fn server_name(files: &LabTls) {
    let probe = |name: &str, sslmode: &'static str, server_name: Option<String>| {
        let log = std::env::temp_dir().join(format!("pgha-it-tls-{name}-{}.log", std::process::id()));
        let exporter = Exporter::start(&config(files, &Variant { sslmode, server_name, ..good(files) }), &log);
        wait_until(&format!("{name}: the write probe tried"), Duration::from_secs(15), || {
            let m = exporter.scrape();
            let attempts = counter(&m, "pgha_probe_attempts_total", &[("scope", SCOPE), ("probe", "write")]);
            (attempts >= 5.0).then_some(m)
        })
    };
    let wrong = probe("verify-full-wrong", "verify-full", Some("not-a-member.example".into()));
    let tls_failures =
        counter(&wrong, "pgha_probe_failures_total", &[("scope", SCOPE), ("probe", "write"), ("reason", "tls")]);
    assert!(tls_failures >= 5.0, "verify-full with a wrong name fails as tls: {tls_failures}");
    assert_eq!(wrong.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]), Some(0.0));
    let require = probe("require", "require", None);
    assert_eq!(
        require.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]),
        Some(1.0),
        "require checks nothing"
    );
    let full = probe("verify-full-member", "verify-full", Some(require.leader(SCOPE).expect("a leader")));
    assert_eq!(full.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]), Some(1.0), "the leader's name");
}

/// An exporter logging at debug level (text and JSON) while it logs in to etcd, presents its
/// client certificate and logs in to PostgreSQL: neither the etcd password nor the key's
/// contents appear in its log, `/metrics` or `/api/v1/events`.
fn no_secret_at_debug(files: &LabTls) {
    let password = std::fs::read_to_string(files.path("etcd password")).unwrap().trim().to_string();
    let key = std::fs::read_to_string(files.path("client key")).unwrap();
    let mut secrets: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    secrets.push(&password);
    assert!(password.len() >= 8, "a distinctive password");
    for format in ["text", "json"] {
        let (config_path, addr) = Exporter::prepare(&config(files, &good(files)));
        let log = std::env::temp_dir().join(format!("pgha-it-tls-debug-{format}-{}.log", std::process::id()));
        let child = std::process::Command::new(support::binary())
            .args(["--config.file", config_path.to_str().unwrap(), "--web.listen-address", &addr.to_string()])
            .args(["--log.level", "debug", "--log.format", format])
            .env_remove("RUST_LOG")
            .env("PGHA_PROBE_PASSWORD", "app")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let exporter = Exporter { child, addr };
        wait_until("etcd, Patroni and the probes answer", Duration::from_secs(20), || {
            let m = http_get(addr, "/metrics").ok().filter(|(s, _)| *s == 200).map(|(_, b)| Metrics::parse(&b))?;
            (m.get("pgha_etcd_quorum", &[("scope", SCOPE)]) == Some(1.0)
                && m.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]) == Some(1.0)
                && m.leader(SCOPE).is_some())
            .then_some(())
        });
        let mut seen = vec![std::fs::read_to_string(&log).unwrap()];
        for path in ["/metrics", "/api/v1/events", "/"] {
            seen.push(http_get(addr, path).unwrap().1);
        }
        drop(exporter);
        seen.push(std::fs::read_to_string(&log).unwrap());
        assert!(seen[0].contains("DEBUG") || seen[0].contains("\"level\":\"DEBUG\""), "a debug log");
        for text in &seen {
            for secret in &secrets {
                assert!(!text.contains(secret), "a secret ({:.4}…) in the {format} run's output", secret);
            }
        }
    }
}
