//! The layout's promises, checked on the source: no import cycle between the top-level modules
//! of `src/`, and `model/` free of I/O crates. `cargo test --test architecture -- --nocapture`
//! prints the dependency graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates that do I/O; the pure model must not name them.
const IO_CRATES: [&str; 5] = ["tokio", "reqwest", "etcd_client", "tokio_postgres", "axum"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/a.rs` and `src/a/**` are `a`); `None` for the
/// crate roots.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The code of a file without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).filter(|w| !w.is_empty())
}

/// Top-level module -> the top-level modules its code names as `crate::x`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file) else { continue };
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let deps = graph.entry(module.clone()).or_default();
        for word in words(&text) {
            if let Some(rest) = word.strip_prefix("crate::") {
                let target = rest.split("::").next().unwrap_or("").to_string();
                if !target.is_empty() && target != module && target.chars().all(|c| c.is_lowercase() || c == '_') {
                    deps.insert(target);
                }
            }
        }
        // `use crate::{a, b::c}` groups.
        for group in text.split("crate::{").skip(1) {
            let inside = group.split('}').next().unwrap_or("");
            for item in inside.split(',') {
                let target = item.trim().split("::").next().unwrap_or("").trim().to_string();
                if !target.is_empty() && target != module && target != "self" {
                    deps.insert(target);
                }
            }
        }
    }
    graph
}

/// One cycle through `graph`, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = graph();
    for (module, deps) in &graph {
        eprintln!("{module} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(graph.contains_key("model") && graph.contains_key("state"), "unexpected layout: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_model_does_no_io() {
    let mut files = Vec::new();
    rust_files(&src().join("model"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let text = code(&std::fs::read_to_string(&file).unwrap());
        for word in words(&text) {
            let root = word.split("::").next().unwrap_or("");
            assert!(!IO_CRATES.contains(&root), "{} names {word}", file.display());
        }
    }
}

#[test]
fn the_checks_can_fail() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
    assert_eq!(code("let x = 1; // tokio::spawn"), "let x = 1; ");
}

/// One rustls crypto provider in the build for this machine: with two compiled in (ring beside
/// aws-lc-rs), rustls' default builder panics at run time in whichever library calls it.
/// (Cargo.lock lists ring for other platforms; `cargo tree` tells what this build links.)
#[test]
fn one_crypto_provider_is_built() {
    let tree = |krate: &str| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["tree", "--offline", "--locked", "--edges", "normal", "--invert", krate])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(tree("aws-lc-rs").starts_with("aws-lc-rs"), "aws-lc-rs is the provider");
    assert_eq!(tree("ring"), "", "ring is built too: a second crypto provider");
}
