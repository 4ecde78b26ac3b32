//! The Grafana/Prometheus bundle, checked without a lab: the dashboards are well formed, the
//! rules pass `promtool check rules` and `promtool test rules`, and every metric they name is
//! shaped like one of the exporter's. (That each name is really exposed is checked against a
//! live `/metrics` by the lab test, through `support/bundle.rs`.)

#[path = "support/bundle.rs"]
mod bundle;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const DASHBOARDS: [&str; 4] = ["pgha-etcd.json", "pgha-failover.json", "pgha-haproxy.json", "pgha-overview.json"];
const DS: &str = "${datasource}";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn uses_datasource_variable(v: &Value) -> bool {
    v["uid"] == DS && v["type"] == "prometheus"
}

/// The contents of every `[...]` in an expression (range selectors and subqueries).
fn ranges(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else { break };
        out.push(&rest[open + 1..open + close]);
        rest = &rest[open + close + 1..];
    }
    out
}

/// Checks one dashboard; returns what is wrong with it.
fn check_dashboard(name: &str, d: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut err = |msg: String| errors.push(format!("{name}: {msg}"));

    if d["uid"].as_str().is_none_or(str::is_empty) {
        err("no uid".into());
    }
    if d["title"].as_str().is_none_or(str::is_empty) {
        err("no title".into());
    }
    if d["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        err(format!("schemaVersion {} is not a Grafana 10+ schema", d["schemaVersion"]));
    }
    if d["graphTooltip"] != 1 {
        err("graphTooltip is not 1 (shared crosshair)".into());
    }
    if d["editable"] != false {
        err("editable is not false (provisioned dashboards are changed in the repository)".into());
    }

    let vars = d["templating"]["list"].as_array().cloned().unwrap_or_default();
    let var = |n: &str| vars.iter().find(|v| v["name"] == n);
    match var("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        Some(v) => err(format!("the datasource variable is not of type datasource with query prometheus: {v}")),
        None => err("no datasource variable".into()),
    }
    match var("scope") {
        Some(v) if uses_datasource_variable(&v["datasource"]) => {}
        Some(_) => err("the scope variable does not query ${datasource}".into()),
        None => err("no scope variable".into()),
    }
    for v in &vars {
        if v["type"] == "query" && !uses_datasource_variable(&v["datasource"]) {
            err(format!("variable {} does not query ${{datasource}}", v["name"]));
        }
    }

    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if a["builtIn"] == 1 {
            continue;
        }
        if !uses_datasource_variable(&a["datasource"]) {
            err(format!("annotation {} does not use ${{datasource}}", a["name"]));
        }
        if a["expr"].as_str().or_else(|| a["target"]["expr"].as_str()).is_none_or(|e| e.trim().is_empty()) {
            err(format!("annotation {} has no expr", a["name"]));
        }
    }

    let panels = bundle::panels(d);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("").to_string();
        let what = format!("panel {title:?} (id {})", p["id"]);
        match p["id"].as_i64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => err(format!("{what}: id {id} is used twice")),
            None => err(format!("{what}: no integer id")),
        }
        if !uses_datasource_variable(&p["datasource"]) {
            err(format!("{what}: datasource is not ${{datasource}}: {}", p["datasource"]));
        }
        let g = &p["gridPos"];
        match (g["x"].as_i64(), g["y"].as_i64(), g["w"].as_i64(), g["h"].as_i64()) {
            (Some(x), Some(y), Some(w), Some(h)) if x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24 => {
                boxes.push((what.clone(), x, y, w, h))
            }
            _ => err(format!("{what}: bad gridPos {g}")),
        }
        if p["type"] == "row" {
            continue;
        }
        if p["fieldConfig"]["defaults"]["unit"].as_str().is_none_or(str::is_empty) {
            err(format!("{what}: fieldConfig.defaults.unit is not set"));
        }
        if p["description"].as_str().is_none_or(str::is_empty) {
            err(format!("{what}: no description"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            err(format!("{what}: no targets"));
        }
        for t in &targets {
            if !uses_datasource_variable(&t["datasource"]) {
                err(format!("{what}: target {} does not use ${{datasource}}", t["refId"]));
            }
            let expr = t["expr"].as_str().unwrap_or("");
            if expr.trim().is_empty() {
                err(format!("{what}: target {} has no expr", t["refId"]));
            }
            // Rates follow the scrape interval through $__rate_interval; windows are Grafana's.
            for r in ranges(expr) {
                if !["$__rate_interval", "$__range", "$__interval"].contains(&r) {
                    err(format!("{what}: range [{r}] is not a Grafana interval variable in {expr}"));
                }
                if r != "$__rate_interval" && (expr.contains("rate(") || expr.contains("irate(")) {
                    err(format!("{what}: a rate without $__rate_interval in {expr}"));
                }
            }
        }
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart = a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1 || a.2 + a.4 <= b.2 || b.2 + b.4 <= a.2;
            if !apart {
                err(format!("{} and {} overlap", a.0, b.0));
            }
        }
    }
    errors
}

#[test]
fn dashboards_are_well_formed() {
    let dir = repo().join("grafana/dashboards");
    let mut errors = Vec::new();
    let mut uids = BTreeMap::new();
    for name in DASHBOARDS {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let d: Value = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("{name}: not JSON: {e}"));
                continue;
            }
        };
        if let Some(other) = uids.insert(d["uid"].to_string(), name) {
            errors.push(format!("{name}: uid {} is also {other}'s", d["uid"]));
        }
        errors.extend(check_dashboard(name, &d));
    }
    assert!(errors.is_empty(), "{} problems in the dashboards:\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn dashboard_queries_have_every_variable_substituted() {
    let queries = bundle::dashboard_queries("demo");
    let titles: BTreeSet<&str> = queries.iter().map(|(d, _, _)| d.as_str()).collect();
    assert_eq!(titles.len(), DASHBOARDS.len(), "every dashboard has queries: {titles:?}");
    assert!(queries.iter().any(|(_, p, _)| p.starts_with("annotation: ")), "annotation queries are included");
    for (d, p, q) in &queries {
        assert!(!q.contains('$'), "{d} / {p}: a variable is left in {q}");
    }
}

fn promtool(args: &[&str]) {
    let dir = repo().join("prometheus");
    let out = match Command::new("promtool").args(args).current_dir(&dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool is missing: install Prometheus's promtool (Debian: apt-get install prometheus) to check the rules")
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yml_in(dir: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo().join("prometheus").join(dir))
        .unwrap_or_else(|e| panic!("reading prometheus/{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no .yml files in prometheus/{dir}");
    out
}

#[test]
#[ignore = "needs promtool (Debian: prometheus): run compose/local/test"]
fn rules_pass_promtool() {
    let rules = yml_in("rules");
    let tests = yml_in("tests");
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    promtool(&args);
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    promtool(&args);
    promtool(&["check", "config", "prometheus.yml"]);
}

/// As the monitoring-mixins lint wants: a summary is one plain sentence (templating belongs to
/// the description, which names the cluster), so alerts group and read the same everywhere.
#[test]
fn alert_summaries_are_plain_sentences_and_descriptions_name_the_scope() {
    let rules: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("prometheus/rules/pgha-alerts.yml")).unwrap())
            .unwrap();
    let mut problems = Vec::new();
    let mut alerts = 0;
    for rule in rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let Some(name) = rule["alert"].as_str() else { continue };
        alerts += 1;
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        let description = rule["annotations"]["description"].as_str().unwrap_or_default();
        if summary.contains("{{") || !summary.ends_with('.') || summary.is_empty() {
            problems.push(format!("{name}: summary {summary:?} is not a plain sentence ending in a period"));
        }
        if name != "PghaExporterDown" && !description.contains("$labels.scope") {
            problems.push(format!("{name}: the description does not name the scope"));
        }
    }
    assert!(alerts >= 18, "{alerts} alerts found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn referenced_metrics_are_named_like_the_exporters() {
    let names = bundle::referenced_metrics();
    assert!(!names.is_empty());
    let odd: Vec<&String> = names
        .iter()
        .filter(|n| !(n.starts_with("pgha_") || n.starts_with("process_") || *n == "up" || n.starts_with("ALERTS")))
        .collect();
    assert!(odd.is_empty(), "names that are not the exporter's: {odd:?} (all: {names:?})");
}
