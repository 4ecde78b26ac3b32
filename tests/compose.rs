//! compose/: the stack's file checked without Docker (every build context, Dockerfile and COPY
//! source exists; every bind mount's source exists; what Grafana's provisioning, Prometheus's
//! configuration and the exporter's config name is what the stack mounts and runs), then, with
//! Docker (ignored): `docker-compose config` and the Compose specification's schema, and the
//! stack itself (tests/compose/stack.rs).

#[path = "compose/entry.rs"]
mod entry;
#[path = "compose/stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose_dir() -> PathBuf {
    repo().join("compose")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut value: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    serde_json::to_value(value).unwrap()
}

/// `${NAME:-default}` as Compose interpolates it with nothing set.
fn defaults(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').map(|e| at + e).expect("an unclosed ${");
        let inner = &rest[at + 2..end];
        out.push_str(inner.split_once(":-").map(|(_, d)| d).unwrap_or(""));
        rest = &rest[end + 1..];
    }
    out + rest
}

fn services() -> BTreeMap<String, Value> {
    let file = yaml(&compose_dir().join("docker-compose.yml"));
    serde_json::from_value(file["services"].clone()).unwrap()
}

fn service(name: &str) -> Value {
    services().remove(name).unwrap_or_else(|| panic!("no service {name}"))
}

/// (source, target) of a service's bind mounts, sources resolved against compose/.
fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    let volumes = service["volumes"].as_array().cloned().unwrap_or_default();
    let specs = volumes.iter().filter_map(|v| v.as_str()).filter(|v| v.starts_with('.') || v.starts_with('/'));
    specs
        .map(|v| {
            let v = defaults(v);
            let mut parts = v.split(':');
            (compose_dir().join(parts.next().unwrap()), parts.next().unwrap().to_string())
        })
        .collect()
}

/// The host path a container path of `service` comes from, through its bind mounts.
fn host_path(service: &Value, container_path: &str) -> Option<PathBuf> {
    binds(service).into_iter().find_map(|(source, target)| {
        let rest = container_path.strip_prefix(&target)?;
        Some(if rest.is_empty() { source } else { source.join(rest.trim_start_matches('/')) })
    })
}

/// The sources of a Dockerfile's COPY lines (not `--from` ones).
fn copy_sources(dockerfile: &str) -> Vec<String> {
    let lines = dockerfile.lines().map(str::trim).filter(|l| l.starts_with("COPY ") && !l.contains("--from"));
    lines
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().skip(1).collect();
            words[..words.len() - 1].iter().map(|w| w.to_string()).collect::<Vec<_>>()
        })
        .collect()
}

/// A setting's value when its variable is unset: `${VAR:-default}` is `default`.
fn default_of(value: &str) -> &str {
    value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
        .map_or(value, |(_, d)| d)
}

#[test]
fn the_image_built_from_the_source_runs_as_the_one_from_the_host_binary() {
    let runtime = |file: &str| {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let stage = text.rsplit_once("\nFROM ${BASE}\n").map(|(_, s)| s.to_string()).expect("a FROM ${BASE} stage");
        let binary = |l: &&str| l.starts_with("COPY ") && l.ends_with(" /usr/bin/pgha-exporter");
        stage.lines().filter(|l| !binary(l)).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(runtime("Dockerfile.source"), runtime("Dockerfile"), "the final stages differ beyond the binary's COPY");
    let exporter = service("pgha-exporter");
    assert_eq!(
        exporter["build"]["dockerfile"].as_str().map(default_of),
        Some("Dockerfile.source"),
        "compose builds from the source by default"
    );
    let host_binary = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for source in copy_sources(&host_binary) {
        assert!(dockerignore_allows(&source), "Dockerfile: .dockerignore keeps {source} out of the build");
    }
    let up = std::fs::read_to_string(compose_dir().join("up")).unwrap();
    assert!(up.contains("export PGHA_EXPORTER_DOCKERFILE=Dockerfile\n"), "compose/up uses the host's binary");
}

/// What the root .dockerignore lets into a build whose context is the repository.
fn dockerignore_allows(path: &str) -> bool {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix('!')).any(|allowed| allowed == path)
}

#[test]
fn every_build_context_dockerfile_and_copy_source_exists() {
    for (name, s) in services() {
        let Some(build) = s.get("build") else { continue };
        let context = compose_dir().join(build["context"].as_str().unwrap());
        let dockerfile = context.join(default_of(build["dockerfile"].as_str().unwrap_or("Dockerfile")));
        let text =
            std::fs::read_to_string(&dockerfile).unwrap_or_else(|e| panic!("{name}: {}: {e}", dockerfile.display()));
        for source in copy_sources(&text) {
            let root_context = context.canonicalize().unwrap() == repo().canonicalize().unwrap();
            if root_context {
                assert!(dockerignore_allows(&source), "{name}: .dockerignore keeps {source} out of the build");
            } else {
                assert!(context.join(&source).exists(), "{name}: COPY {source}: not in {}", context.display());
            }
        }
        assert!(text.contains("ARG BASE=debian:bookworm-slim"), "{name}: {} has no ARG BASE", dockerfile.display());
    }
}

#[test]
fn every_bind_mount_source_exists() {
    for (name, s) in services() {
        for (source, target) in binds(&s) {
            assert!(source.exists(), "{name}: {} (mounted at {target}) does not exist", source.display());
        }
    }
}

#[test]
fn grafana_provisioning_names_what_is_mounted() {
    let grafana = service("grafana");
    let providers = yaml(&repo().join("grafana/provisioning/dashboards/pgha.yml"));
    let path = providers["providers"][0]["options"]["path"].as_str().unwrap();
    let dashboards = host_path(&grafana, path).unwrap_or_else(|| panic!("{path} is not mounted in grafana"));
    assert!(dashboards.join("pgha-failover.json").is_file(), "{} holds no pgha-failover.json", dashboards.display());
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str().unwrap();
    assert!(host_path(&grafana, home).is_some_and(|p| p.is_file()), "the home dashboard {home} is not mounted");
    for dir in ["/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"] {
        assert!(host_path(&grafana, dir).is_some_and(|p| p.is_dir()), "{dir} is not mounted in grafana");
    }
    let datasources = yaml(&repo().join("grafana/provisioning/datasources/prometheus.yml"));
    let url = datasources["datasources"][0]["url"].as_str().unwrap();
    assert_eq!(url, "http://prometheus:9090", "the datasource names another Prometheus");
    assert!(services().contains_key("prometheus"));
}

#[test]
fn prometheus_loads_the_mounted_config_and_rules_and_scrapes_the_exporter() {
    let prometheus = service("prometheus");
    let dockerfile = std::fs::read_to_string(compose_dir().join("images/prometheus/Dockerfile")).unwrap();
    let flag =
        dockerfile.split('"').find_map(|w| w.strip_prefix("--config.file=")).expect("the image names its config");
    let config = host_path(&prometheus, flag).unwrap_or_else(|| panic!("{flag} is not mounted"));
    let parsed = yaml(&config);
    for glob in parsed["rule_files"].as_array().unwrap() {
        let dir = config.parent().unwrap().join(glob.as_str().unwrap()).parent().unwrap().to_path_buf();
        let rules = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yml"));
        assert!(rules.count() >= 2, "{} holds no rules", dir.display());
    }
    let target = parsed["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str().unwrap();
    let exporter = service("pgha-exporter");
    let command: Vec<&str> = exporter["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let port = command.iter().find_map(|c| c.strip_prefix("--web.listen-address=0.0.0.0:")).unwrap();
    assert_eq!(target, format!("pgha-exporter:{port}"), "Prometheus scrapes another address");
}

/// The names a service reaches: every service, and its `extra_hosts` names.
fn reachable_from(service: &Value) -> Vec<String> {
    let extra = service["extra_hosts"].as_array().cloned().unwrap_or_default();
    let extra = extra.iter().filter_map(|h| h.as_str()?.split(':').next().map(str::to_string));
    services().into_keys().chain(extra).collect()
}

#[test]
fn the_exporter_configs_load_and_name_what_the_stack_runs() {
    let exporter = service("pgha-exporter");
    let mounted = host_path(&exporter, "/etc/pgha-exporter/pgha-exporter.yml").expect("the config is mounted");
    assert!(mounted.ends_with("pgha-exporter-single.yml"), "{}", mounted.display());
    let names = reachable_from(&exporter);
    std::env::set_var("PGHA_PROBE_PASSWORD", "x");
    for (profile, hosts) in
        [("single", &["etcd1", "etcd2", "etcd3", "haproxy", "entry"][..]), ("ha-entry", &["haproxy2"][..])]
    {
        let config = compose_dir().join(format!("pgha-exporter-{profile}.yml"));
        let loaded =
            pgha_exporter::config::Config::load(&config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        assert_eq!(loaded.clusters.len(), 1);
        let text = std::fs::read_to_string(&config).unwrap();
        for host in hosts {
            assert!(text.contains(&format!("{host}:")), "{profile}: the config does not name {host}");
            assert!(names.iter().any(|n| n == host), "{host} is not a name the exporter reaches");
        }
    }
    let ha = service("haproxy2");
    assert_eq!(ha["profiles"][0], "ha-entry", "haproxy2 is not in the ha-entry profile");
    for client in ["writer", "setup"] {
        let s = service(client);
        let host = s["environment"]["PGHOST"].as_str().unwrap().to_string();
        assert!(reachable_from(&s).contains(&host), "{client} connects to {host}, a name it cannot reach");
    }
}

#[test]
fn every_dependency_exists_and_waits_on_a_healthcheck_the_image_has() {
    let all = services();
    for (name, s) in &all {
        let Some(deps) = s["depends_on"].as_object() else { continue };
        for (dep, how) in deps {
            let target = all.get(dep).unwrap_or_else(|| panic!("{name} depends on {dep}, not a service"));
            if how["condition"] != "service_healthy" {
                continue;
            }
            let build = &target["build"];
            let context = compose_dir().join(build["context"].as_str().unwrap_or("."));
            let dockerfile =
                std::fs::read_to_string(context.join(default_of(build["dockerfile"].as_str().unwrap_or("Dockerfile"))))
                    .unwrap_or_else(|_| panic!("{name} waits for {dep}'s health, which it does not build"));
            assert!(
                dockerfile.contains("HEALTHCHECK"),
                "{name} waits for {dep}'s health: its image has no HEALTHCHECK"
            );
        }
    }
}

#[test]
fn interpolation_defaults_are_read_as_compose_reads_them() {
    assert_eq!(defaults("${PGHA_NET:-10.117.0}.11"), "10.117.0.11");
    assert_eq!(defaults("a ${X} b"), "a  b");
    assert_eq!(defaults("${PGHA_BIND:-127.0.0.1}:${PGHA_EXPORTER_PORT:-9744}:9744"), "127.0.0.1:9744:9744");
}

#[test]
fn the_stack_network_holds_every_fixed_address() {
    let file = yaml(&compose_dir().join("docker-compose.yml"));
    let subnet = defaults(file["networks"]["pgha"]["ipam"]["config"][0]["subnet"].as_str().unwrap());
    let prefix = subnet.strip_suffix(".0/24").expect("a /24 network");
    let mut seen = BTreeMap::new();
    for (name, s) in services() {
        let Some(address) = s["networks"]["pgha"]["ipv4_address"].as_str() else { continue };
        let address = defaults(address);
        assert!(address.starts_with(&format!("{prefix}.")), "{name}: {address} is outside {subnet}");
        if let Some(other) = seen.insert(address.clone(), name.clone()) {
            panic!("{name} and {other} both have {address}");
        }
    }
    assert!(seen.len() >= 10, "{seen:?}");
}

#[test]
#[ignore = "needs docker-compose (Debian's package, with its Compose specification schema)"]
fn docker_compose_accepts_the_file_and_it_follows_the_compose_specification() {
    let file = compose_dir().join("docker-compose.yml");
    let out = std::process::Command::new("docker-compose").arg("-f").arg(&file).args(["config", "-q"]).output();
    let out = out.expect("docker-compose is missing: run `compose/local/lab install`");
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    stack::validate_against_the_compose_schema(&file);
}
