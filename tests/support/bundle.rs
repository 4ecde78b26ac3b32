//! The queries of the Grafana/Prometheus bundle (`grafana/dashboards/*.json`,
//! `prometheus/rules/*.yml`), for tests: every metric name they reference, and every dashboard
//! query with its variables substituted, ready to send to Prometheus.
//!
//! Metric names are found with a small PromQL tokenizer: identifiers outside label matchers,
//! strings and brackets that are not functions, keywords, label lists (`by (...)`,
//! `on (...)`, `group_left (...)`) or recording-rule names (they contain a colon).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` ending in one of `exts`, sorted by name.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| exts.contains(&x)))
        .collect();
    out.sort();
    out
}

fn dashboards() -> Vec<serde_json::Value> {
    files(&repo().join("grafana/dashboards"), &["json"])
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
        })
        .collect()
}

/// Every panel of a dashboard, rows' nested panels included, in order.
pub fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(list: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Prometheus annotations of a dashboard: (name, expr); the expr is at the top (the classic
/// form) or in `target`.
fn annotations(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        let expr = a["expr"].as_str().or_else(|| a["target"]["expr"].as_str()).unwrap_or("");
        if !expr.trim().is_empty() {
            out.push((a["name"].as_str().unwrap_or("").to_string(), expr.to_string()));
        }
    }
    out
}

/// Every `expr` of every rule (recording and alerting) in `prometheus/rules/*.yml`.
fn rule_exprs() -> Vec<String> {
    let mut out = Vec::new();
    for p in files(&repo().join("prometheus/rules"), &["yml", "yaml"]) {
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        let doc: serde_norway::Value =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", p.display()));
        for group in doc["groups"].as_sequence().into_iter().flatten() {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                if let Some(expr) = rule["expr"].as_str() {
                    out.push(expr.to_string());
                }
            }
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
    "start",
    "end",
    "inf",
    "nan",
];
/// Keywords that may be followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Skips from an opening delimiter at `i` to just past its closing one, stepping over strings.
fn skip_group(s: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(s, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// Skips a string literal starting at `i` (its quote) to just past its closing quote.
fn skip_string(s: &[char], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() {
        if s[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if s[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    j
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_non_space(s: &[char], mut i: usize) -> Option<(usize, char)> {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    s.get(i).map(|c| (i, *c))
}

/// Metric names in a PromQL expression (Grafana variables allowed), recording rules excluded.
fn promql_metrics(expr: &str, out: &mut BTreeSet<String>) {
    let s: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&s, i);
        } else if c == '{' {
            i = skip_group(&s, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&s, i, '[', ']');
        } else if c == '$' {
            // A Grafana variable: $name or ${name[:format]}.
            i += 1;
            if s.get(i) == Some(&'{') {
                i = skip_group(&s, i, '{', '}');
            } else {
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            // A number or a duration (1e-3, 0x1f, 5m, 1h30m).
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_') {
                let exp = s[i] == 'e' || s[i] == 'E';
                i += 1;
                if exp && i < s.len() && (s[i] == '+' || s[i] == '-') {
                    i += 1;
                }
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let next = next_non_space(&s, i);
            if KEYWORDS.contains(&lower.as_str()) {
                if let Some((j, '(')) = next {
                    if LABEL_LISTS.contains(&lower.as_str()) {
                        i = skip_group(&s, j, '(', ')');
                    }
                }
            } else if matches!(next, Some((_, '('))) {
                // A function call: its arguments are scanned as they come.
            } else if !word.contains(':') {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
}

/// Metric names in a Grafana variable query: `label_values(metric, label)`,
/// `query_result(expr)`, or a bare expression; `label_values(label)` names none.
fn variable_metrics(query: &str, out: &mut BTreeSet<String>) {
    let q = query.trim();
    if let Some(args) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
        // Split at the last top-level comma: the selector may hold commas inside braces.
        let chars: Vec<char> = args.chars().collect();
        let (mut depth, mut split) = (0i32, None);
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    i = skip_string(&chars, i);
                    continue;
                }
                '{' | '(' | '[' => depth += 1,
                '}' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => split = Some(i),
                _ => {}
            }
            i += 1;
        }
        if let Some(at) = split {
            promql_metrics(&chars[..at].iter().collect::<String>(), out);
        }
    } else if let Some(inner) = q.strip_prefix("query_result(").and_then(|r| r.strip_suffix(')')) {
        promql_metrics(inner, out);
    } else if !q.starts_with("label_names(") && !q.starts_with("metrics(") {
        promql_metrics(q, out);
    }
}

/// Every metric name used in dashboard targets, annotations and variables and in rule
/// expressions, as written (`_bucket`, `_total` included), without recording-rule names.
pub fn referenced_metrics() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    promql_metrics(expr, &mut out);
                }
            }
        }
        for (_, expr) in annotations(&d) {
            promql_metrics(&expr, &mut out);
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                let q = v["query"].as_str().or_else(|| v["query"]["query"].as_str()).unwrap_or("");
                variable_metrics(q, &mut out);
            }
        }
    }
    for expr in rule_exprs() {
        promql_metrics(&expr, &mut out);
    }
    out
}

/// Replaces Grafana variables: `$scope`/`${scope}`/`${scope:fmt}` by `scope`, and
/// `$__rate_interval`, `$__interval`, `$__range` by `1m`; others are left as they are.
fn substitute(expr: &str, scope: &str) -> String {
    let s: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != '$' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let (name, end) = if s.get(i + 1) == Some(&'{') {
            let close = s[i..].iter().position(|c| *c == '}').map(|p| i + p).unwrap_or(s.len() - 1);
            let inner: String = s[i + 2..close].iter().collect();
            (inner.split(':').next().unwrap_or("").to_string(), close + 1)
        } else {
            let mut j = i + 1;
            while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == '_') {
                j += 1;
            }
            (s[i + 1..j].iter().collect::<String>(), j)
        };
        match name.as_str() {
            "scope" => out.push_str(scope),
            "__rate_interval" | "__interval" | "__range" => out.push_str("1m"),
            _ => out.extend(&s[i..end]),
        }
        i = end;
    }
    out
}

/// Every query of every dashboard: (dashboard title, panel title, expr) with `$scope` replaced
/// by `scope` and Grafana's interval variables by `1m`; annotation queries come after a
/// dashboard's panels, with the panel title `annotation: <name>`.
pub fn dashboard_queries(scope: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for d in dashboards() {
        let title = d["title"].as_str().unwrap_or("").to_string();
        for p in panels(&d) {
            let panel = p["title"].as_str().unwrap_or("").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                    out.push((title.clone(), panel.clone(), substitute(expr, scope)));
                }
            }
        }
        for (name, expr) in annotations(&d) {
            out.push((title.clone(), format!("annotation: {name}"), substitute(&expr, scope)));
        }
    }
    out
}

#[cfg(test)]
mod tokenizer {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        promql_metrics(expr, &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn finds_metrics_and_nothing_else() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (scope, le) (rate(pgha_probe_duration_seconds_bucket{scope=~"$scope", probe="write"}[$__rate_interval])))"#
            ),
            ["pgha_probe_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "pgha_last_failover_write_downtime_seconds > on(scope) group_left pgha:failover_write_downtime_objective_seconds\n\
                 and on(scope) (time() - pgha_last_failover_timestamp_seconds < 3600) # a comment naming_no_metric"
            ),
            ["pgha_last_failover_timestamp_seconds", "pgha_last_failover_write_downtime_seconds"]
        );
        assert_eq!(
            names("x * on(scope) group_left(old_leader, new_leader) y offset 5m > bool 1e-3 or absent(up{job='a b'}) unless Inf"),
            ["up", "x", "y"]
        );
        assert_eq!(names(r#"SUM BY (a) (rate(m_total[5m:1m])) / ignoring(b) ${x:raw}"#), ["m_total"]);
        let mut out = BTreeSet::new();
        variable_metrics("label_values(pgha_cluster_verdict{a=\"x,y\"}, scope)", &mut out);
        variable_metrics("label_values(scope)", &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), ["pgha_cluster_verdict"]);
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(
            substitute(
                r#"rate(m{scope=~"$scope|${scope}|${scope:regex}"}[$__rate_interval]) $__range ${__interval} $other $__range_s"#,
                "demo"
            ),
            r#"rate(m{scope=~"demo|demo|demo"}[1m]) 1m 1m $other $__range_s"#
        );
    }
}
