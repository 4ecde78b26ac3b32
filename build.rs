//! Puts the git revision the exporter is built from into `PGHA_REVISION` (the `revision` label
//! of `pgha_build_info`): `PGHA_REVISION` from the environment when set (a release build from a
//! tarball), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PGHA_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(reference) = head.strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{}", reference.trim());
        }
    }
    let from_git = || {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let revision = std::env::var("PGHA_REVISION").ok().filter(|r| !r.is_empty()).or_else(from_git);
    println!("cargo:rustc-env=PGHA_REVISION={}", revision.unwrap_or_else(|| "unknown".into()));
}
