//! The release as users install it. `compose/release` twice gives the same tarball and package
//! bytes; the tarball holds what the README says; the package passes lintian and
//! `systemd-analyze verify`, installs, runs against the lab exactly as its unit would start it
//! (user, environment file, open-files limit, state directory), and purges leaving only the
//! system user, as Debian's practice is; the image built on the local base runs as nobody,
//! becomes healthy by its own HEALTHCHECK, listens on 0.0.0.0:9744 inside, and reads the lab.
//! Needs root, Docker and Debian's lintian, debootstrap and systemd: run compose/local/test.

mod support;

#[path = "packages/deb.rs"]
mod deb;
#[path = "packages/image.rs"]
mod image;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::steps::Steps;
use support::*;

/// The lab's exporter configuration; the probe password comes from `PGHA_PROBE_PASSWORD`.
pub const LAB_CONFIG: &str = include_str!("../compose/local/pgha-exporter.yml");

/// Runs `command`; panics with its output when it fails; returns stdout and stderr together.
pub fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed ({}):\n{text}", out.status);
    text
}

/// What one `compose/release` run produced.
pub struct Release {
    pub dist: PathBuf,
    pub tarball: PathBuf,
    pub deb: PathBuf,
}

fn release(dist: &Path) -> Release {
    let version = env!("CARGO_PKG_VERSION");
    run(Command::new(repo().join("compose/release")).env("PGHA_DIST_DIR", dist));
    let release = Release {
        dist: dist.to_path_buf(),
        tarball: dist.join(format!("pgha-exporter-{version}.linux-amd64.tar.gz")),
        deb: dist.join(format!("pgha-exporter_{version}-1_amd64.deb")),
    };
    for file in [&release.tarball, &release.deb] {
        assert!(file.is_file(), "compose/release made no {}", file.display());
    }
    release
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ ({} and {} bytes)", a.display(), b.display(), x.len(), y.len());
}

fn reproducible(first: &Release, second: &Release) {
    same_bytes(&first.tarball, &second.tarball);
    same_bytes(&first.deb, &second.deb);
    for r in [first, second] {
        run(Command::new("sh").arg("-c").arg("sha256sum -c ./*.sha256").current_dir(&r.dist));
    }
}

/// The tarball's entries: what the README names, owned by root, stamped with the commit's time.
fn tarball_contents(r: &Release) {
    let listing = run(Command::new("tar").args(["-tvzf", r.tarball.to_str().unwrap(), "--numeric-owner"]));
    let top = format!("pgha-exporter-{}.linux-amd64/", env!("CARGO_PKG_VERSION"));
    let names: Vec<String> =
        listing.lines().filter_map(|l| l.split_whitespace().last()).map(|n| n.replacen(&top, "", 1)).collect();
    for wanted in ["pgha-exporter", "LICENSE", "README.md", "pgha-exporter.yml.example", "pgha-exporter.service"] {
        assert!(names.iter().any(|n| n == wanted), "the tarball has no {wanted}:\n{listing}");
    }
    assert_eq!(names.iter().filter(|n| n.starts_with("dashboards/") && n.ends_with(".json")).count(), 4, "{listing}");
    assert_eq!(names.iter().filter(|n| n.starts_with("rules/") && n.ends_with(".yml")).count(), 2, "{listing}");
    assert!(
        listing.lines().all(|l| l.split_whitespace().nth(1) == Some("0/0")),
        "entries not owned by 0/0:\n{listing}"
    );
    let dates: std::collections::BTreeSet<&str> = listing.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert_eq!(dates.len(), 1, "entries with different dates:\n{listing}");
}

/// Lintian finds no error (its warnings are printed).
fn lintian_clean(r: &Release) {
    let out = Command::new("lintian").args(["--tag-display-limit", "0"]).arg(&r.deb).output().expect("running lintian");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("lintian:\n{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty() && out.status.success(), "lintian errors:\n{}", errors.join("\n"));
}

#[test]
#[ignore = "needs root, Docker, lintian, debootstrap and the lab: run compose/local/test"]
fn release_tarball_package_and_image() {
    for tool in ["lintian", "debootstrap", "systemd-analyze", "docker", "help2man", "setpriv"] {
        assert!(
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success()),
            "{tool} is missing: run `compose/local/lab install` (needs root)"
        );
    }
    let scratch = std::env::temp_dir().join(format!("pgha-release-{}", std::process::id()));
    let log = scratch.join("exporter.log");
    std::fs::create_dir_all(&scratch).unwrap();
    let first = release(&repo().join("dist"));
    // Every source file the release packs gets a new mtime: the bytes must not change.
    run(Command::new("find")
        .args(["LICENSE", "README.md", "packaging", "grafana", "prometheus/rules", "-exec", "touch", "{}", "+"])
        .current_dir(repo()));
    let second = release(&scratch.join("dist"));
    let mut steps = Steps::new(log.clone());
    steps.run("the tarball and the package are the same bytes twice", || reproducible(&first, &second), || {});
    steps.run(
        "the tarball holds the binary, docs, config, unit, dashboards, rules",
        || tarball_contents(&first),
        || {},
    );
    steps.run("lintian finds no error in the package", || lintian_clean(&first), || {});
    let _lab = LabGuard::up(log.clone());
    steps.run(
        "the package installs, runs as its unit, purges clean",
        || deb::installed_run_purged(&first, &log),
        deb::purge_and_remove_the_user,
    );
    steps.run("the image runs as nobody, healthy, against the lab", || image::built_and_run(&scratch), image::remove);
    steps.finish();
    let _ = std::fs::remove_dir_all(&scratch);
}
