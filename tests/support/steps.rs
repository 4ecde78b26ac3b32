//! A step runner for the lab run: each named step runs on its own, a failed step is recorded,
//! the lab is healed and the run goes on, and the run fails at the end listing every failed
//! step, with the lab's and the exporter's logs.
//!
//! While developing, `PGHA_LAB_ONLY=<part of a step name>` runs only the matching steps. The run
//! then fails anyway (a partial run proves nothing), and under `CI=true` the variable is refused.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use super::repo;

pub struct Steps {
    exporter_log: PathBuf,
    failed: Vec<(String, String)>,
    passed: usize,
    skipped: usize,
    only: Option<String>,
    started: Instant,
}

fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast::<&str>().map(|s| s.to_string()).unwrap_or_else(|_| "a panic".into()),
    }
}

impl Steps {
    pub fn new(exporter_log: PathBuf) -> Self {
        let only = std::env::var("PGHA_LAB_ONLY").ok().filter(|o| !o.is_empty());
        assert!(
            only.is_none() || std::env::var("CI").as_deref() != Ok("true"),
            "PGHA_LAB_ONLY is for development: CI runs every step"
        );
        Self { exporter_log, failed: Vec::new(), passed: 0, skipped: 0, only, started: Instant::now() }
    }

    /// Runs one step; on failure records it and runs `heal` (whose own failure is recorded too).
    pub fn run<T>(&mut self, name: &str, step: impl FnOnce() -> T, heal: impl FnOnce()) -> Option<T> {
        if self.only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            self.skipped += 1;
            return None;
        }
        let at = self.started.elapsed().as_secs_f64();
        eprintln!("\n===== step [{at:>6.1}s] {name}");
        match catch_unwind(AssertUnwindSafe(step)) {
            Ok(v) => {
                self.passed += 1;
                eprintln!("===== step passed: {name}");
                Some(v)
            }
            Err(payload) => {
                let why = message(payload);
                eprintln!("===== step FAILED: {name}: {why}");
                self.failed.push((name.to_string(), why));
                if let Err(payload) = catch_unwind(AssertUnwindSafe(heal)) {
                    self.failed.push((format!("healing after {name}"), message(payload)));
                }
                None
            }
        }
    }

    /// Fails the test, listing every failed step, when any failed.
    pub fn finish(self) {
        eprintln!(
            "\n{} steps passed, {} failed, in {:.1}s",
            self.passed,
            self.failed.len(),
            self.started.elapsed().as_secs_f64()
        );
        if self.failed.is_empty() {
            assert_eq!(self.skipped, 0, "{} steps not run (PGHA_LAB_ONLY): a partial run fails", self.skipped);
            return;
        }
        let lab = |verb: &str| {
            Command::new(repo().join("compose/local/lab"))
                .arg(verb)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        eprintln!("===== lab status\n{}", lab("status"));
        eprintln!("===== lab logs\n{}", lab("logs"));
        let log = std::fs::read_to_string(&self.exporter_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(200).collect();
        eprintln!("===== exporter log (last 200 lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        let list: Vec<String> = self.failed.iter().map(|(name, why)| format!("- {name}: {why}")).collect();
        panic!("{} lab step(s) failed:\n{}", self.failed.len(), list.join("\n"));
    }
}
