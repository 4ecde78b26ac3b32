//! The compose stack for real: built from the local base, brought up under a project name and a
//! network of this test's own, checked through its Prometheus, then `compose/demo`'s whole fault
//! sequence; removed (containers, network, volumes) when dropped, even on failure.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Debian's docker-compose ships the Compose specification's JSON schema and validates against
/// it; the test reads it from there rather than keeping a copy.
const COMPOSE_SCHEMA: &str = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json";

const VALIDATE: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(open(sys.argv[2]))), key=str)
for e in errors:
    print("/".join(map(str, e.absolute_path)) + ": " + e.message)
sys.exit(1 if errors else 0)
"#;

/// (valid, messages) of a compose file against the specification's schema.
fn against_schema(file: &Path) -> (bool, String) {
    assert!(Path::new(COMPOSE_SCHEMA).is_file(), "{COMPOSE_SCHEMA} is missing: install Debian's docker-compose");
    let out = Command::new("/usr/bin/python3").args(["-c", VALIDATE, COMPOSE_SCHEMA]).arg(file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn validate_against_the_compose_schema(file: &Path) {
    let (valid, errors) = against_schema(file);
    assert!(valid, "{} does not follow the Compose specification:\n{errors}", file.display());
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose/broken.yml");
    let (valid, errors) = against_schema(&broken);
    assert!(!valid && errors.contains("restrat") && errors.contains("ports"), "the broken file passed:\n{errors}");
}

/// The stack tests run one after the other: two stacks at once would build the exporter's binary
/// into the same dist/ at once, and share two cores.
static ONE_STACK_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A project of this test's own; `compose/down` when dropped.
pub struct Stack {
    pub env: Vec<(&'static str, String)>,
}

impl Stack {
    fn script(&self, name: &str, args: &[&str]) -> bool {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        eprintln!("===== compose/{name} {}", args.join(" "));
        let status = Command::new(repo.join("compose").join(name)).args(args).envs(self.env.clone()).status();
        status.unwrap_or_else(|e| panic!("running compose/{name}: {e}")).success()
    }

    fn port(&self, key: &str) -> String {
        self.env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("docker-compose").args(["ps"]).envs(self.env.clone()).status();
        }
        let _ = self.script("down", &[]);
    }
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

/// The value of a PromQL instant query's first series, if any.
fn query(prometheus_port: &str, expr: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:{prometheus_port}/api/v1/query");
    let out = Command::new("curl")
        .args(["-fsS", "-m", "5", "--data-urlencode", &format!("query={expr}"), &url])
        .output()
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    body["data"]["result"][0]["value"][1].as_str().map(str::to_string)
}

impl Stack {
    /// Builds the local base, then the stack with `profiles` (COMPOSE_PROFILES) on network
    /// `net`, up and healthy as its Prometheus sees it.
    fn up(net: &str, profiles: &str) -> Stack {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let base = Command::new(repo.join("compose/base-image")).output().expect("running compose/base-image");
        assert!(base.status.success(), "compose/base-image: {}", String::from_utf8_lossy(&base.stderr));
        let stack = Stack {
            env: vec![
                ("COMPOSE_FILE", repo.join("compose/docker-compose.yml").to_string_lossy().into_owned()),
                ("COMPOSE_PROJECT_NAME", format!("pgha-test-{}-{}", std::process::id(), net.replace('.', "-"))),
                ("COMPOSE_PROFILES", profiles.to_string()),
                ("PGHA_NET", net.to_string()),
                ("PGHA_BASE_IMAGE", String::from_utf8_lossy(&base.stdout).trim().to_string()),
                ("PGHA_EXPORTER_PORT", free_port()),
                ("PGHA_PROMETHEUS_PORT", free_port()),
                ("PGHA_GRAFANA_PORT", free_port()),
            ],
        };
        let started = Instant::now();
        assert!(stack.script("up", &[]), "compose/up failed");
        eprintln!("the stack ({profiles:?}) was up and healthy in {:.0?}", started.elapsed());
        let prometheus = stack.port("PGHA_PROMETHEUS_PORT");
        let deadline = Instant::now() + Duration::from_secs(60);
        while query(&prometheus, r#"pgha_cluster_verdict{verdict="healthy"} == 1"#).is_none() {
            assert!(Instant::now() < deadline, "Prometheus does not report the cluster healthy within 60 s");
            std::thread::sleep(Duration::from_secs(2));
        }
        assert_eq!(query(&prometheus, "count(pgha_patroni_member_up == 1)").as_deref(), Some("3"));
        stack
    }
}

#[test]
#[ignore = "needs root, Docker and debootstrap: builds and runs the compose stack"]
fn the_stack_comes_up_healthy_and_the_demo_passes() {
    let _one = ONE_STACK_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let stack = Stack::up("10.118.0", "");
    assert!(stack.script("demo", &[]), "compose/demo failed: see its FAILED lines above");
}

#[test]
#[ignore = "needs root, Docker and debootstrap: builds and runs the compose stack"]
fn with_ha_entry_the_virtual_ip_moves_and_writes_come_back() {
    let _one = ONE_STACK_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let stack = Stack::up("10.119.0", "ha-entry");
    let mut entry = super::entry::Entry::new(&stack.env, "10.119.0.30");
    for fault in ["stop", "kill", "pause"] {
        entry.fault_the_holder(fault);
    }
    entry.freeze_the_keepalived_of_the_holder();
    assert!(stack.script("demo", &["haproxy"]), "compose/demo's haproxy step failed with a standby");
}
