//! The Prometheus text format (0.0.4), for scrapers that do not ask for OpenMetrics (curl,
//! promtool, older agents): prometheus-client writes only OpenMetrics, whose `info` type and
//! `# EOF` they do not know. Written from the same families, so both formats always agree.

use std::fmt::Write;

use super::{Family, Labels, MetricType, Value};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The families in the text format: a counter is named with its `_total`, an info family is a
/// gauge named with its `_info`, a histogram has its cumulative buckets, sum and count.
pub fn encode(families: &[Family]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for family in families.iter().filter(|f| !f.series.is_empty()) {
        let (suffix, ty) = match family.kind {
            MetricType::Counter => ("_total", "counter"),
            MetricType::Info => ("_info", "gauge"),
            MetricType::Histogram => ("", "histogram"),
            _ => ("", "gauge"),
        };
        let name = Name { family: family.name, suffix };
        out.push_str("# HELP ");
        name.push(&mut out);
        out.push(' ');
        escape(&mut out, family.help, false);
        out.push_str("\n# TYPE ");
        name.push(&mut out);
        let _ = writeln!(out, " {ty}");
        for (labels, value) in &family.series {
            match value {
                Value::Gauge(v) | Value::FloatCounter(v) => sample(&mut out, name, labels, None, *v),
                Value::Counter(v) => sample(&mut out, name, labels, None, *v as f64),
                Value::Info => sample(&mut out, name, labels, None, 1.0),
                Value::Histogram { sum, count, buckets } => {
                    let part = |suffix| Name { family: family.name, suffix };
                    let mut cumulative = 0;
                    for (le, n) in buckets {
                        cumulative += n;
                        sample(&mut out, part("_bucket"), labels, Some(*le), cumulative as f64);
                    }
                    if buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                        sample(&mut out, part("_bucket"), labels, Some(f64::INFINITY), *count as f64);
                    }
                    sample(&mut out, part("_sum"), labels, None, *sum);
                    sample(&mut out, part("_count"), labels, None, *count as f64);
                }
            }
        }
    }
    out
}

/// A series name as written: the family's name and a suffix (`_total`, `_bucket`, ...). Written
/// in place, like every part of a line: the body is rebuilt at each scrape, so nothing on the
/// way allocates.
#[derive(Clone, Copy)]
struct Name {
    family: &'static str,
    suffix: &'static str,
}

impl Name {
    fn push(self, out: &mut String) {
        out.push_str(self.family);
        out.push_str(self.suffix);
    }
}

fn sample(out: &mut String, name: Name, labels: &Labels, le: Option<f64>, value: f64) {
    name.push(out);
    let mut sep = '{';
    for (k, v) in labels {
        out.push(sep);
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v, true);
        out.push('"');
        sep = ',';
    }
    if let Some(le) = le {
        out.push(sep);
        out.push_str("le=\"");
        number(out, le);
        out.push('"');
        sep = ',';
    }
    if sep == ',' {
        out.push('}');
    }
    out.push(' ');
    number(out, value);
    out.push('\n');
}

/// Go's spelling of floats, which Prometheus parses: `+Inf`, `-Inf`, `NaN`.
fn number(out: &mut String, v: f64) {
    match v {
        v if v.is_nan() => out.push_str("NaN"),
        v if v == f64::INFINITY => out.push_str("+Inf"),
        v if v == f64::NEG_INFINITY => out.push_str("-Inf"),
        v => {
            let _ = write!(out, "{v}");
        }
    }
}

/// Escapes `\` and newlines (help texts), and `"` too in label values.
fn escape(out: &mut String, text: &str, quote: bool) {
    if !text.contains(['\\', '\n', '"']) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{l, Families};

    #[test]
    fn every_kind_is_written_as_the_text_format_has_it() {
        let mut f = Families::default();
        f.info("pgha_build", "Build.", l(&[("version", "1.0")]));
        f.counter("pgha_x", "Things \\ counted.\nTwice.", l(&[("scope", "a\"b\\c\nd")]), 3);
        f.gauge("pgha_g", "A gauge.", l(&[]), f64::INFINITY);
        let h = crate::model::hist::Hist::new(&[1.0]);
        f.histogram("pgha_h_seconds", "A histogram.", l(&[("scope", "s")]), &h);
        let text = encode(&f.into_vec());
        let expected_start =
            "# HELP pgha_build_info Build.\n# TYPE pgha_build_info gauge\npgha_build_info{version=\"1.0\"} 1\n\
             # HELP pgha_x_total Things \\\\ counted.\\nTwice.\n# TYPE pgha_x_total counter\n\
             pgha_x_total{scope=\"a\\\"b\\\\c\\nd\"} 3\n# HELP pgha_g A gauge.\n# TYPE pgha_g gauge\npgha_g +Inf\n\
             # HELP pgha_h_seconds A histogram.\n# TYPE pgha_h_seconds histogram\n";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(text.contains("pgha_h_seconds_bucket{scope=\"s\",le=\"+Inf\"} 0\n"), "{text}");
        assert!(text.ends_with("pgha_h_seconds_sum{scope=\"s\"} 0\npgha_h_seconds_count{scope=\"s\"} 0\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }
}
