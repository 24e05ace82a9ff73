//! Prometheus rule files: parsing (`groups:` → groups → recording and alerting rules) and the
//! checks `promtool check rules` makes, with errors worded and located the way it words them
//! (`file: group "g", rule 2, "name": ...`). Thanos's group field `partial_response_strategy`
//! is accepted too.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::template;
use crate::{Error, Result};

/// What to do when a querier answers with a partial response (some stores failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialResponseStrategy {
    /// Fail the evaluation (Thanos's default for rules).
    #[default]
    Abort,
    /// Use the partial result and keep its warnings.
    Warn,
}

/// What a rule does with its result.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Stores the result under a new metric name.
    Recording {
        /// The metric name (`record:`).
        record: String,
    },
    /// Turns each result element into an alert.
    Alerting {
        /// The alert name (`alert:`).
        alert: String,
        /// How long an element must be present before the alert fires (`for:`).
        for_: Duration,
        /// How long an alert keeps firing after its condition cleared (`keep_firing_for:`).
        keep_firing_for: Duration,
        /// Annotation templates.
        annotations: BTreeMap<String, String>,
    },
}

/// One recording or alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Recording or alerting, with the kind's fields.
    pub kind: RuleKind,
    /// The PromQL expression.
    pub expr: String,
    /// Labels added to (or overriding) the result's; templates for alerting rules. The group's
    /// labels are merged in (the rule's win).
    pub labels: BTreeMap<String, String>,
}

impl Rule {
    /// The rule's name: its `record` or `alert`.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { record } => record,
            RuleKind::Alerting { alert, .. } => alert,
        }
    }
}

/// A group of rules evaluated in order at one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleGroup {
    /// The file the group came from.
    pub file: String,
    /// The group's name, unique within its file.
    pub name: String,
    /// Evaluation interval; `None` means the global `--eval-interval`.
    pub interval: Option<Duration>,
    /// How far back evaluation times are shifted; `None` means zero.
    pub query_offset: Option<Duration>,
    /// Most series (recording) or alerts (alerting) a rule may produce; 0 means no limit.
    pub limit: usize,
    /// Labels added to every rule of the group.
    pub labels: BTreeMap<String, String>,
    /// What to do with partial responses (Thanos's `partial_response_strategy`).
    pub partial_response_strategy: PartialResponseStrategy,
    /// The rules, in evaluation order.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    query_offset: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    partial_response_strategy: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    expr: Option<ExprValue>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// `expr:` may be written as a number (`expr: 1`), which YAML reads as an integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExprValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl ExprValue {
    fn text(self) -> String {
        match self {
            ExprValue::Str(s) => s,
            ExprValue::Int(i) => i.to_string(),
            ExprValue::Float(f) => f.to_string(),
            ExprValue::Bool(b) => b.to_string(),
        }
    }
}

/// Parses a Prometheus duration (`model.Duration`): `0`, or units in the order y w d h m s ms,
/// each at most once (`1h30m`, `90s`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let idx = UNITS.iter().position(|(u, _)| *u == unit)?;
        if idx < next_unit {
            return None;
        }
        next_unit = idx + 1;
        total = total.checked_add(n.checked_mul(UNITS[idx].1)?)?;
        rest = &rest[unit_len..];
    }
    // Go's model.Duration is int64 nanoseconds.
    if total > (i64::MAX as u64) / 1_000_000 {
        return None;
    }
    Some(Duration::from_millis(total))
}

/// Label names valid under Prometheus 3's UTF-8 name validation: any non-empty string.
fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
}

/// Parses and validates one rule file's text. `file` names it in errors.
pub fn parse_rules(file: &str, text: &str) -> Result<Vec<RuleGroup>> {
    let fail = |errors: Vec<String>| Error::RuleFile {
        file: file.to_string(),
        errors,
    };
    let raw: RawFile = if text.trim().is_empty() {
        RawFile { groups: Vec::new() }
    } else {
        serde_norway::from_str::<Option<RawFile>>(text)
            .map_err(|e| fail(vec![e.to_string()]))?
            .unwrap_or(RawFile { groups: Vec::new() })
    };
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    let mut groups = Vec::new();
    for g in raw.groups {
        let mut dur = |what: &str, v: Option<String>| -> Option<Duration> {
            let v = v?;
            match parse_duration(&v) {
                Some(d) => Some(d),
                None => {
                    errors.push(format!("{what}: not a valid duration string: {v:?}"));
                    None
                }
            }
        };
        let interval = dur("interval", g.interval);
        let query_offset = dur("query_offset", g.query_offset);
        if g.name.is_empty() {
            errors.push("Groupname must not be empty".to_string());
        }
        if !names.insert(g.name.clone()) {
            errors.push(format!(
                "groupname: \"{}\" is repeated in the same file",
                g.name
            ));
        }
        let labels = g.labels.unwrap_or_default();
        for k in labels.keys() {
            if !valid_label_name(k) || k == "__name__" {
                errors.push(format!("invalid label name: {k}"));
            }
        }
        let partial_response_strategy = match g.partial_response_strategy.as_deref() {
            None | Some("abort") | Some("ABORT") => PartialResponseStrategy::Abort,
            Some("warn") | Some("WARN") => PartialResponseStrategy::Warn,
            Some(other) => {
                errors.push(format!(
                    "group {:?}: partial_response_strategy must be warn or abort, got {other:?}",
                    g.name
                ));
                PartialResponseStrategy::Abort
            }
        };
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let record = r.record.unwrap_or_default();
            let alert = r.alert.unwrap_or_default();
            let rule_name = if alert.is_empty() { &record } else { &alert };
            let prefix = format!("group {:?}, rule {}, {:?}", g.name, i + 1, rule_name);
            let mut errs: Vec<String> = Vec::new();
            let mut rdur = |what: &str, v: Option<String>| -> Duration {
                match v {
                    None => Duration::ZERO,
                    Some(v) => parse_duration(&v).unwrap_or_else(|| {
                        errs.push(format!(
                            "field '{what}': not a valid duration string: {v:?}"
                        ));
                        Duration::ZERO
                    }),
                }
            };
            let for_ = rdur("for", r.for_);
            let keep_firing_for = rdur("keep_firing_for", r.keep_firing_for);
            let expr = r.expr.map(ExprValue::text).unwrap_or_default();
            if !record.is_empty() && !alert.is_empty() {
                errs.push("only one of 'record' and 'alert' must be set".into());
            }
            if record.is_empty() && alert.is_empty() {
                errs.push("one of 'record' or 'alert' must be set".into());
            }
            if expr.is_empty() {
                errs.push("field 'expr' must be set in rule".into());
            } else if let Err(e) = strata_promql::engine::parse(&expr) {
                errs.push(format!("could not parse expression: {e}"));
            }
            let annotations = r.annotations.unwrap_or_default();
            let rule_labels = r.labels.unwrap_or_default();
            if !record.is_empty() {
                if !annotations.is_empty() {
                    errs.push("invalid field 'annotations' in recording rule".into());
                }
                if !for_.is_zero() {
                    errs.push("invalid field 'for' in recording rule".into());
                }
                if !keep_firing_for.is_zero() {
                    errs.push("invalid field 'keep_firing_for' in recording rule".into());
                }
                if record.contains('{') || record.contains('}') {
                    errs.push(format!(
                        "braces present in the recording rule name; should it be in expr?: {record}"
                    ));
                }
            }
            for k in rule_labels.keys() {
                if !valid_label_name(k) || k == "__name__" {
                    errs.push(format!("invalid label name: {k}"));
                }
            }
            for k in annotations.keys() {
                if !valid_label_name(k) {
                    errs.push(format!("invalid annotation name: {k}"));
                }
            }
            if !alert.is_empty() {
                for (k, v) in &rule_labels {
                    if let Err(e) = template::Template::parse(v) {
                        errs.push(format!("label {k:?}: {e}"));
                    }
                }
                for (k, v) in &annotations {
                    if let Err(e) = template::Template::parse(v) {
                        errs.push(format!("annotation {k:?}: {e}"));
                    }
                }
            }
            errors.extend(errs.into_iter().map(|e| format!("{prefix}: {e}")));
            let mut merged = labels.clone();
            merged.extend(rule_labels);
            let kind = if alert.is_empty() {
                RuleKind::Recording { record }
            } else {
                RuleKind::Alerting {
                    alert,
                    for_,
                    keep_firing_for,
                    annotations,
                }
            };
            rules.push(Rule {
                kind,
                expr,
                labels: merged,
            });
        }
        let limit = match g.limit {
            Some(l) if l < 0 => 0,
            Some(l) => usize::try_from(l).unwrap_or(usize::MAX),
            None => 0,
        };
        groups.push(RuleGroup {
            file: file.to_string(),
            name: g.name,
            interval,
            query_offset,
            limit,
            labels,
            partial_response_strategy,
            rules,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(fail(errors))
    }
}

/// Reads and parses one rule file.
pub fn load_file(path: &Path) -> Result<Vec<RuleGroup>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::RuleFile {
        file: name.clone(),
        errors: vec![e.to_string()],
    })?;
    parse_rules(&name, &text)
}

/// Expands `--rule-file` patterns (globs allowed) to files, sorted and de-duplicated. A pattern
/// without glob characters must name an existing file; a glob may match nothing.
pub fn expand_patterns(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        if p.contains(['*', '?', '[']) {
            let paths = glob::glob(p).map_err(|e| Error::RuleFile {
                file: p.clone(),
                errors: vec![format!("bad glob: {e}")],
            })?;
            for entry in paths {
                let path = entry.map_err(|e| Error::RuleFile {
                    file: p.clone(),
                    errors: vec![e.to_string()],
                })?;
                if path.is_file() {
                    out.push(path);
                }
            }
        } else {
            out.push(PathBuf::from(p));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Loads every file the patterns name; fails on the first bad file (all its errors listed), so a
/// reload either takes all files or none.
pub fn load_all(patterns: &[String]) -> Result<Vec<RuleGroup>> {
    let mut groups = Vec::new();
    for path in expand_patterns(patterns)? {
        groups.extend(load_file(&path)?);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        match parse_rules("f.yml", text) {
            Ok(g) => panic!("accepted: {g:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_groups_and_rules() {
        let g = parse_rules(
            "f.yml",
            r#"
groups:
  - name: a
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {team: x}
    partial_response_strategy: warn
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: y}
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        annotations: {summary: "{{ $labels.job }} down"}
"#,
        )
        .expect("parses");
        assert_eq!(g.len(), 1);
        let g = &g[0];
        assert_eq!(g.interval, Some(Duration::from_secs(30)));
        assert_eq!(g.query_offset, Some(Duration::from_secs(60)));
        assert_eq!(g.limit, 10);
        assert_eq!(g.partial_response_strategy, PartialResponseStrategy::Warn);
        assert_eq!(g.rules[0].name(), "job:up:sum");
        assert_eq!(
            g.rules[0].labels["team"], "y",
            "rule labels override group labels"
        );
        assert_eq!(g.rules[1].labels["team"], "x");
        match &g.rules[1].kind {
            RuleKind::Alerting {
                for_,
                keep_firing_for,
                ..
            } => {
                assert_eq!(*for_, Duration::from_secs(300));
                assert_eq!(*keep_firing_for, Duration::from_secs(60));
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn errors_name_group_rule_index_and_name() {
        let e = err_of(
            "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n  - record: b\n    expr: sum(\n",
        );
        assert!(
            e.starts_with("f.yml: group \"g\", rule 2, \"b\": could not parse expression"),
            "{e}"
        );
    }

    #[test]
    fn rejects_what_promtool_rejects() {
        for (text, want) in [
            (
                "groups:\n- name: ''\n  rules: []\n",
                "Groupname must not be empty",
            ),
            (
                "groups:\n- name: a\n- name: a\n",
                "is repeated in the same file",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - record: x\n    alert: y\n    expr: up\n",
                "only one of",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - expr: up\n",
                "one of 'record' or 'alert'",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - record: x\n",
                "field 'expr' must be set",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    for: 1m\n",
                "invalid field 'for'",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - record: x{a=\"b\"}\n    expr: up\n",
                "braces present",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    labels: {__name__: y}\n",
                "invalid label name",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    bogus: 1\n",
                "unknown field",
            ),
            (
                "groups:\n- name: a\n  interval: 1x\n  rules: []\n",
                "not a valid duration",
            ),
            (
                "groups:\n- name: a\n  rules:\n  - alert: x\n    expr: up\n    annotations: {s: '{{ $nope }}'}\n",
                "annotation \"s\"",
            ),
        ] {
            let e = err_of(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn durations_as_prometheus_reads_them() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30m1h"), None, "units out of order");
        assert_eq!(parse_duration("1.5h"), None);
        assert_eq!(parse_duration("-1m"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn empty_file_has_no_groups() {
        assert_eq!(parse_rules("f", "").expect("ok"), Vec::new());
        assert_eq!(parse_rules("f", "groups: []").expect("ok"), Vec::new());
    }
}
