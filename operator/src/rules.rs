//! The rule files a `Ruler` runs, collected without I/O from the ConfigMaps and PrometheusRules it
//! selects. Every file is checked with `strata_rule::rules::parse_rules` (the ruler's own parser,
//! which accepts what `promtool check rules` accepts); a bad file is left out and reported, the
//! others still run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::DynamicObject;

/// The API group of prometheus-operator's `PrometheusRule`.
pub const PROMETHEUS_RULE_GROUP: &str = "monitoring.coreos.com";
/// The API version of `PrometheusRule` that is read.
pub const PROMETHEUS_RULE_VERSION: &str = "v1";
/// The kind read.
pub const PROMETHEUS_RULE_KIND: &str = "PrometheusRule";

/// A rule file that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRuleFile {
    /// `ConfigMap` or `PrometheusRule`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// The ConfigMap data key; `None` for a PrometheusRule (its `spec.groups`).
    pub key: Option<String>,
    /// What the parser said.
    pub error: String,
}

impl std::fmt::Display for InvalidRuleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{} {} key {}: {}", self.kind, self.name, k, self.error),
            None => write!(f, "{} {}: {}", self.kind, self.name, self.error),
        }
    }
}

/// The rule files to run (generated ConfigMap key → YAML) and the ones left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectedRules {
    /// Valid files, keyed by their name in the generated ConfigMap (always ending in `.yaml`).
    pub files: BTreeMap<String, String>,
    /// Files left out, in the order found.
    pub invalid: Vec<InvalidRuleFile>,
}

/// The start of every generated ConfigMap key of ConfigMap `name`'s files.
pub fn configmap_file_prefix(name: &str) -> String {
    format!("configmap_{name}_")
}

/// The generated ConfigMap key of data key `key` of ConfigMap `name`. Object names have no `_`,
/// so the prefix and name are unambiguous.
pub fn configmap_file_key(name: &str, key: &str) -> String {
    let base = format!("{}{key}", configmap_file_prefix(name));
    if base.ends_with(".yaml") {
        base
    } else {
        format!("{base}.yaml")
    }
}

/// The generated ConfigMap key of PrometheusRule `name`.
pub fn prometheus_rule_file_key(name: &str) -> String {
    format!("prometheusrule_{name}.yaml")
}

/// The rule file (YAML) of a PrometheusRule's `spec`: its `groups` are a rule file's groups. A
/// numeric `expr` (prometheus-operator allows int-or-string) becomes its string.
pub fn prometheus_rule_to_file(spec: &serde_json::Value) -> Result<String, String> {
    let mut groups = match spec.get("groups") {
        None | Some(serde_json::Value::Null) => serde_json::Value::Array(Vec::new()),
        Some(g @ serde_json::Value::Array(_)) => g.clone(),
        Some(_) => return Err("spec.groups is not a list".into()),
    };
    if let Some(gs) = groups.as_array_mut() {
        for g in gs {
            let Some(rules) = g.get_mut("rules").and_then(|r| r.as_array_mut()) else {
                continue;
            };
            for r in rules {
                if let Some(e) = r.get_mut("expr")
                    && let serde_json::Value::Number(n) = e
                {
                    *e = serde_json::Value::String(n.to_string());
                }
            }
        }
    }
    serde_norway::to_string(&serde_json::json!({ "groups": groups })).map_err(|e| e.to_string())
}

fn validate(file: &str, text: &str) -> Result<(), String> {
    strata_rule::rules::parse_rules(file, text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Collects the rule files of `configmaps` (every data key) and `prometheus_rules`, sorted by name,
/// leaving out (and listing) every file the ruler would reject.
pub fn collect(configmaps: &[ConfigMap], prometheus_rules: &[DynamicObject]) -> CollectedRules {
    let mut out = CollectedRules::default();
    let mut cms: Vec<&ConfigMap> = configmaps.iter().collect();
    cms.sort_by_key(|c| c.name_any());
    for cm in cms {
        let name = cm.name_any();
        for (key, text) in cm.data.iter().flatten() {
            match validate(key, text) {
                Ok(()) => {
                    out.files
                        .insert(configmap_file_key(&name, key), text.clone());
                }
                Err(error) => out.invalid.push(InvalidRuleFile {
                    kind: "ConfigMap",
                    name: name.clone(),
                    key: Some(key.clone()),
                    error,
                }),
            }
        }
        for key in cm.binary_data.iter().flat_map(|b| b.keys()) {
            out.invalid.push(InvalidRuleFile {
                kind: "ConfigMap",
                name: name.clone(),
                key: Some(key.clone()),
                error: "binaryData is not a rule file: put rule files under data".into(),
            });
        }
    }
    let mut prs: Vec<&DynamicObject> = prometheus_rules.iter().collect();
    prs.sort_by_key(|p| p.name_any());
    for pr in prs {
        let name = pr.name_any();
        let file = prometheus_rule_file_key(&name);
        let text = prometheus_rule_to_file(&pr.data["spec"]);
        match text.and_then(|t| validate(&file, &t).map(|()| t)) {
            Ok(t) => {
                out.files.insert(file, t);
            }
            Err(error) => out.invalid.push(InvalidRuleFile {
                kind: PROMETHEUS_RULE_KIND,
                name,
                key: None,
                error,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn pr(name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("dynamic object")
    }

    const GOOD: &str =
        "groups:\n- name: g\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n";

    #[test]
    fn prometheus_rule_groups_become_a_rule_file() {
        let spec = serde_json::json!({"groups": [{
            "name": "node", "interval": "30s",
            "rules": [
                {"alert": "Down", "expr": "up == 0", "for": "5m",
                 "labels": {"severity": "page"}, "annotations": {"summary": "{{ $labels.instance }} down"}},
                {"record": "one", "expr": 1}
            ]
        }]});
        let text = prometheus_rule_to_file(&spec).expect("convert");
        let groups = strata_rule::rules::parse_rules("pr", &text).expect("valid rule file");
        assert_eq!(groups.len(), 1);
        let back: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
        assert_eq!(back["groups"][0]["name"], "node");
        assert_eq!(back["groups"][0]["interval"], "30s");
        assert_eq!(back["groups"][0]["rules"][0]["for"], "5m");
        assert_eq!(
            back["groups"][0]["rules"][0]["annotations"]["summary"],
            "{{ $labels.instance }} down"
        );
        assert_eq!(back["groups"][0]["rules"][1]["expr"], "1");
    }

    #[test]
    fn a_prometheus_rule_without_groups_is_an_empty_file_and_bad_groups_an_error() {
        let text = prometheus_rule_to_file(&serde_json::json!({})).expect("empty");
        assert!(
            strata_rule::rules::parse_rules("x", &text).is_ok(),
            "{text}"
        );
        assert!(prometheus_rule_to_file(&serde_json::json!({"groups": "no"})).is_err());
    }

    #[test]
    fn bad_files_are_left_out_and_named_good_ones_kept() {
        let bad = "groups:\n- name: g\n  rules:\n  - record: r\n    expr: sum(\n";
        let collected = collect(
            &[
                cm("b-rules", &[("bad.yaml", bad), ("ok", GOOD)]),
                cm("a-rules", &[("good.yaml", GOOD)]),
            ],
            &[
                pr(
                    "ok",
                    serde_json::json!({"groups": [{"name": "p", "rules": [{"record": "x", "expr": "up"}]}]}),
                ),
                pr(
                    "dup",
                    serde_json::json!({"groups": [{"name": "p", "rules": []}, {"name": "p", "rules": []}]}),
                ),
            ],
        );
        assert_eq!(
            collected.files.keys().cloned().collect::<Vec<_>>(),
            [
                "configmap_a-rules_good.yaml",
                "configmap_b-rules_ok.yaml",
                "prometheusrule_ok.yaml"
            ]
        );
        assert_eq!(collected.invalid.len(), 2, "{:?}", collected.invalid);
        let first = collected.invalid[0].to_string();
        assert!(
            first.starts_with("ConfigMap b-rules key bad.yaml: "),
            "{first}"
        );
        let second = collected.invalid[1].to_string();
        assert!(second.starts_with("PrometheusRule dup: "), "{second}");
        assert!(second.contains('p'), "{second}");
    }
}
