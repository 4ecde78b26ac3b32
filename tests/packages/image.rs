//! The image, built from the repository's Dockerfile on the local base (`compose/base-image`),
//! run twice: as it is, with its own CMD, until its HEALTHCHECK says healthy (nobody, listening
//! on 0.0.0.0:9744 inside, reached through a published loopback port); and on the host's network
//! against the lab, with a read-only root, the config mounted read-only and the probe password
//! from a mounted file. Every container, the volume and the test image carry names of this test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::run;
use crate::support::*;

const IMAGE: &str = "pgha-exporter-test:packages";
const AS_IS: &str = "pgha-test-image-as-is";
const ON_LAB: &str = "pgha-test-image-lab";
const STATE_VOLUME: &str = "pgha-test-image-state";

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args)).trim().to_string()
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, container])
}

/// The container's main process runs as 65534 (nobody), as the image's USER says.
fn runs_as_nobody(container: &str) {
    assert_eq!(inspect(container, "{{.Config.User}}"), "65534:65534");
    let pid = inspect(container, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().skip(1).collect::<Vec<_>>(), ["65534"; 4], "{uid}");
}

/// Its own CMD, nothing else but the config and the password: healthy by its own HEALTHCHECK
/// (run every second here instead of every 10 s), answering on the published port.
fn as_is(config: &Path) {
    let port = free_port();
    let mount = format!("{}:/etc/pgha-exporter/pgha-exporter.yml:ro", config.display());
    let publish = format!("127.0.0.1:{port}:9744");
    let args = ["run", "-d", "--name", AS_IS, "--health-interval", "1s", "-e", "PGHA_PROBE_PASSWORD=app"];
    docker(&[&args[..], &["-v", &mount, "-p", &publish, IMAGE]].concat());
    wait_until("the image's HEALTHCHECK says healthy", Duration::from_secs(40), || {
        (inspect(AS_IS, "{{.State.Health.Status}}") == "healthy").then_some(())
    });
    runs_as_nobody(AS_IS);
    let (status, body) = http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/metrics").unwrap();
    assert!(status == 200 && body.contains("pgha_build_info"), "{status}: {body}");
}

/// The lab read through the host's network, the password from a file only nobody may read.
fn on_the_lab(scratch: &Path) {
    let secret = scratch.join("probe-password");
    std::fs::write(&secret, "app\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let config = scratch.join("image-lab.yml");
    let with_file = crate::LAB_CONFIG.replace("{env: PGHA_PROBE_PASSWORD}", "{file: /run/secrets/probe-password}");
    assert_ne!(with_file, crate::LAB_CONFIG, "the lab config no longer takes the password from PGHA_PROBE_PASSWORD");
    std::fs::write(&config, with_file).unwrap();
    let port = free_port();
    let mounts = [
        format!("{}:/etc/pgha-exporter/pgha-exporter.yml:ro", config.display()),
        format!("{}:/run/secrets/probe-password:ro", secret.display()),
        format!("{STATE_VOLUME}:/var/lib/pgha-exporter"),
    ];
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let mut args = vec!["run", "-d", "--name", ON_LAB, "--network", "host", "--read-only"];
    mounts.iter().for_each(|m| args.extend(["-v", m]));
    args.extend([IMAGE, "--config.file=/etc/pgha-exporter/pgha-exporter.yml", &listen]);
    args.push("--state.file=/var/lib/pgha-exporter/state.json");
    docker(&args);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let leader =
        wait_until("the image reports the lab's leader and a working write probe", Duration::from_secs(30), || {
            let (_, body) = http_get(addr, "/metrics").ok()?;
            let m = Metrics::parse(&body);
            let writes = m.get("pgha_probe_up", &[("scope", "demo"), ("probe", "write")]) == Some(1.0);
            m.leader("demo").filter(|_| writes)
        });
    eprintln!("the image sees leader {leader}");
    runs_as_nobody(ON_LAB);
    wait_until("the state file is written on the volume", Duration::from_secs(10), || {
        let mut owner = Command::new("docker");
        owner.args(["exec", ON_LAB, "stat", "-c", "%u", "/var/lib/pgha-exporter/state.json"]);
        run_ok(owner).filter(|uid| uid == "65534")
    });
}

fn run_ok(mut command: Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn built_and_run(scratch: &Path) {
    let base = run(&mut Command::new(repo().join("compose/base-image")));
    let base = base
        .lines()
        .find(|l| !l.starts_with("[base-image]"))
        .expect("compose/base-image names its image")
        .trim()
        .to_string();
    remove();
    let build_arg = format!("BASE={base}");
    docker(&["build", "-q", "--build-arg", &build_arg, "-t", IMAGE, repo().to_str().unwrap()]);
    let config = scratch.join("image-as-is.yml");
    std::fs::write(&config, crate::LAB_CONFIG).unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    as_is(&config);
    on_the_lab(scratch);
    remove();
}

/// Removes this test's containers, volume and image (the base image stays: it is a cache).
pub fn remove() {
    let _ = Command::new("docker").args(["rm", "-f", AS_IS, ON_LAB]).output();
    let _ = Command::new("docker").args(["volume", "rm", "-f", STATE_VOLUME]).output();
    let _ = Command::new("docker").args(["rmi", "-f", IMAGE]).output();
}
