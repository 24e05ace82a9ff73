//! The Prometheus relabel config that Thanos's `--selector.relabel-config` takes, used to choose
//! which blocks a gateway serves: the rules run over a block's external labels plus `__block_id`
//! (its ULID), and the block is kept when the result is not dropped and not empty (as Thanos's
//! `LabelShardedMetaFilter` decides).
//!
//! Semantics follow Prometheus's `model/relabel`: regexes are anchored (`^(?s:…)$`), source values
//! are joined with the separator, `$1`/`${name}` templates expand like Go's `Regexp.Expand`, and
//! `hashmod` is the md5-based value Prometheus computes, so a Thanos gateway and a Strata gateway
//! with the same config shard a bucket identically.

use std::collections::BTreeMap;
use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;
use strata_tsdb::Labels;
use ulid::Ulid;

/// The label holding a block's ULID while the selector rules run.
pub const BLOCK_ID_LABEL: &str = "__block_id";

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// Why a relabel config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RelabelError {
    /// The YAML is not a list of rules, or a rule has an unknown field or a value of the wrong type.
    #[error("relabel config is not a list of relabel rules: {0}")]
    Yaml(#[source] serde_norway::Error),
    /// `action` names no relabel action.
    #[error("relabel rule {index}: unknown action {action:?} (expected one of {})", Action::NAMES.join(", "))]
    UnknownAction {
        /// Position of the rule in the list (0-based).
        index: usize,
        /// The action as written.
        action: String,
    },
    /// `regex` does not compile.
    #[error("relabel rule {index}: invalid regex {regex:?}")]
    Regex {
        /// Position of the rule in the list (0-based).
        index: usize,
        /// The regex as written.
        regex: String,
        /// The compiler's complaint.
        #[source]
        source: Box<regex::Error>,
    },
    /// `hashmod` without a non-zero `modulus`.
    #[error("relabel rule {index}: action hashmod requires a non-zero 'modulus'")]
    MissingModulus {
        /// Position of the rule in the list (0-based).
        index: usize,
    },
    /// An action that writes a label without `target_label`.
    #[error("relabel rule {index}: action {action} requires 'target_label'")]
    MissingTargetLabel {
        /// Position of the rule in the list (0-based).
        index: usize,
        /// The action.
        action: Action,
    },
    /// A field that the action does not allow.
    #[error("relabel rule {index}: action {action} {allowed}")]
    UnexpectedField {
        /// Position of the rule in the list (0-based).
        index: usize,
        /// The action.
        action: Action,
        /// What the action allows.
        allowed: &'static str,
    },
}

/// A relabel action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Writes the (templated) replacement into the (templated) target label when the regex matches.
    Replace,
    /// Drops the input unless the regex matches the joined source values.
    Keep,
    /// Drops the input when the regex matches the joined source values.
    Drop,
    /// Writes `md5(joined values) mod modulus` into the target label.
    HashMod,
    /// Copies labels whose name matches the regex to the name given by the replacement.
    LabelMap,
    /// Removes labels whose name matches the regex.
    LabelDrop,
    /// Removes labels whose name does not match the regex.
    LabelKeep,
    /// Drops the input unless the joined source values equal the target label's value.
    KeepEqual,
    /// Drops the input when the joined source values equal the target label's value.
    DropEqual,
    /// Writes the joined source values, lowercased, into the target label.
    Lowercase,
    /// Writes the joined source values, uppercased, into the target label.
    Uppercase,
}

impl Action {
    const ALL: [Action; 11] = [
        Action::Replace,
        Action::Keep,
        Action::Drop,
        Action::HashMod,
        Action::LabelMap,
        Action::LabelDrop,
        Action::LabelKeep,
        Action::KeepEqual,
        Action::DropEqual,
        Action::Lowercase,
        Action::Uppercase,
    ];
    const NAMES: [&'static str; 11] = [
        "replace",
        "keep",
        "drop",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "keepequal",
        "dropequal",
        "lowercase",
        "uppercase",
    ];

    /// The name as written in YAML.
    pub fn name(self) -> &'static str {
        let i = Self::ALL.iter().position(|a| *a == self).unwrap_or(0);
        Self::NAMES[i]
    }

    /// Parses a name case-insensitively, as Prometheus does.
    fn parse(s: &str) -> Option<Self> {
        let lower = s.to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == lower)
            .map(|i| Self::ALL[i])
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule as written in YAML; `None` means "not given" (the default applies).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source_labels: Option<Vec<String>>,
    separator: Option<String>,
    regex: Option<String>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    action: Option<String>,
}

/// One parsed relabel rule.
#[derive(Debug, Clone)]
pub struct RelabelRule {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    modulus: u64,
    target_label: String,
    replacement: String,
    action: Action,
}

impl RelabelRule {
    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    fn from_raw(index: usize, raw: RawRule) -> Result<Self, RelabelError> {
        let action = match raw.action.as_deref() {
            None => Action::Replace,
            Some(a) => Action::parse(a).ok_or_else(|| RelabelError::UnknownAction {
                index,
                action: a.to_string(),
            })?,
        };
        let regex_src = raw.regex.unwrap_or_else(|| DEFAULT_REGEX.to_string());
        let regex =
            Regex::new(&format!("^(?s:{regex_src})$")).map_err(|e| RelabelError::Regex {
                index,
                regex: regex_src.clone(),
                source: Box::new(e),
            })?;
        let rule = RelabelRule {
            source_labels: raw.source_labels.unwrap_or_default(),
            separator: raw
                .separator
                .unwrap_or_else(|| DEFAULT_SEPARATOR.to_string()),
            regex,
            modulus: raw.modulus.unwrap_or(0),
            target_label: raw.target_label.unwrap_or_default(),
            replacement: raw
                .replacement
                .unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string()),
            action,
        };
        rule.validate(index, &regex_src)?;
        Ok(rule)
    }

    /// The checks Prometheus's `Config.Validate` makes.
    fn validate(&self, index: usize, regex_src: &str) -> Result<(), RelabelError> {
        use Action::{
            DropEqual, HashMod, KeepEqual, LabelDrop, LabelKeep, Lowercase, Replace, Uppercase,
        };
        let a = self.action;
        if a == HashMod && self.modulus == 0 {
            return Err(RelabelError::MissingModulus { index });
        }
        let writes = matches!(
            a,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if writes && self.target_label.is_empty() {
            return Err(RelabelError::MissingTargetLabel { index, action: a });
        }
        let unexpected = |allowed| RelabelError::UnexpectedField {
            index,
            action: a,
            allowed,
        };
        if matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual)
            && self.replacement != DEFAULT_REPLACEMENT
        {
            return Err(unexpected("requires the default 'replacement'"));
        }
        if matches!(a, KeepEqual | DropEqual)
            && (regex_src != DEFAULT_REGEX
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR)
        {
            return Err(unexpected(
                "takes only 'source_labels' and 'target_label', no other fields",
            ));
        }
        if matches!(a, LabelDrop | LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(unexpected("takes only 'regex', no other fields"));
        }
        Ok(())
    }

    /// Applies the rule to `lb`; false when the input is dropped.
    fn apply(&self, lb: &mut BTreeMap<String, String>) -> bool {
        let val = self
            .source_labels
            .iter()
            .map(|n| lb.get(n).map(String::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(&self.separator);
        match self.action {
            Action::Keep => return self.regex.is_match(&val),
            Action::Drop => return !self.regex.is_match(&val),
            Action::KeepEqual => {
                return lb.get(&self.target_label).map(String::as_str).unwrap_or("") == val;
            }
            Action::DropEqual => {
                return lb.get(&self.target_label).map(String::as_str).unwrap_or("") != val;
            }
            Action::Replace => {
                let Some(caps) = self.regex.captures(&val) else {
                    return true;
                };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if target.is_empty() {
                    return true;
                }
                let mut res = String::new();
                caps.expand(&self.replacement, &mut res);
                set(lb, target, res);
            }
            Action::Lowercase => set(lb, self.target_label.clone(), val.to_lowercase()),
            Action::Uppercase => set(lb, self.target_label.clone(), val.to_uppercase()),
            Action::HashMod => {
                let m = hashmod(&val, self.modulus);
                set(lb, self.target_label.clone(), m.to_string());
            }
            Action::LabelMap => {
                let snapshot: Vec<(String, String)> =
                    lb.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (name, value) in snapshot {
                    if self.regex.is_match(&name) {
                        let new = self
                            .regex
                            .replace_all(&name, self.replacement.as_str())
                            .into_owned();
                        set(lb, new, value);
                    }
                }
            }
            Action::LabelDrop => lb.retain(|name, _| !self.regex.is_match(name)),
            Action::LabelKeep => lb.retain(|name, _| self.regex.is_match(name)),
        }
        true
    }
}

/// Sets `name` to `value`, or removes `name` when `value` is empty (Prometheus's builder does the
/// same); an empty name is ignored.
fn set(lb: &mut BTreeMap<String, String>, name: String, value: String) {
    if name.is_empty() {
        return;
    }
    if value.is_empty() {
        lb.remove(&name);
    } else {
        lb.insert(name, value);
    }
}

/// Prometheus's `hashmod`: the md5 digest of `value`, its last 8 bytes read as a big-endian u64,
/// modulo `modulus` (which must be non-zero; 0 yields 0).
pub fn hashmod(value: &str, modulus: u64) -> u64 {
    let digest = Md5::digest(value.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&digest[8..16]);
    u64::from_be_bytes(tail).checked_rem(modulus).unwrap_or(0)
}

/// A parsed relabel config: a list of rules applied in order.
#[derive(Debug, Clone, Default)]
pub struct RelabelConfig {
    rules: Vec<RelabelRule>,
}

impl RelabelConfig {
    /// Parses the YAML list Thanos's `--selector.relabel-config` takes. Empty or `null` content is
    /// an empty config (keeps every block).
    pub fn parse(yaml: &str) -> Result<Self, RelabelError> {
        let raw: Option<Vec<RawRule>> = serde_norway::from_str(yaml).map_err(RelabelError::Yaml)?;
        let rules = raw
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| RelabelRule::from_raw(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RelabelConfig { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[RelabelRule] {
        &self.rules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs the rules over `labels`; `None` when a rule dropped the input.
    pub fn process(&self, labels: &Labels) -> Option<Labels> {
        let mut lb: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for rule in &self.rules {
            if !rule.apply(&mut lb) {
                return None;
            }
        }
        // Names are unique and non-empty by construction of the map and `set`.
        Labels::new(lb.into_iter().collect()).ok()
    }

    /// Whether a gateway with this config serves the block `id` with external labels `external`:
    /// the rules run over `external` plus `__block_id`, and the block stays when the result is
    /// neither dropped nor empty.
    pub fn keeps_block(&self, id: Ulid, external: &Labels) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        // As Thanos builds it: `__block_id` first, then the external labels (an external label
        // of that name wins; empty values are no labels).
        let mut pairs: Vec<(String, String)> = external
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if external.get(BLOCK_ID_LABEL).is_none() {
            pairs.push((BLOCK_ID_LABEL.to_string(), id.to_string()));
        }
        let Ok(input) = Labels::new(pairs) else {
            return false;
        };
        self.process(&input).is_some_and(|l| !l.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn run(yaml: &str, input: &[(&str, &str)]) -> Option<Labels> {
        RelabelConfig::parse(yaml).unwrap().process(&labels(input))
    }

    /// Vectors computed with Python's hashlib: `int.from_bytes(hashlib.md5(v).digest()[8:], "big")`.
    /// md5("foo") = acbd18db4cc2f85c edef654fccc4a4d8 → 0xedef654fccc4a4d8 = 17145033699835028696.
    #[test]
    fn hashmod_matches_prometheus_md5_tail() {
        assert_eq!(hashmod("foo", 1 << 63), 17145033699835028696 - (1 << 63));
        assert_eq!(hashmod("foo", 1000), 696);
        assert_eq!(hashmod("foo", 3), 2);
        // md5("01ARZ3NDEKTSV4RRFFQ69G5FAV") tail = 0x7be4499b8403f5ec = 8927341293638776300.
        assert_eq!(hashmod("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1000), 300);
        assert_eq!(hashmod("01ARZ3NDEKTSV4RRFFQ69G5FAV", 3), 1);
        // md5("a;b") tail = 0x21960bf46f2ebd0a = 2420134994223480074: the joined source values.
        let out = run(
            "- source_labels: [x, y]\n  target_label: shard\n  modulus: 1000\n  action: hashmod\n",
            &[("x", "a"), ("y", "b")],
        )
        .unwrap();
        assert_eq!(out.get("shard"), Some("74"));
        // md5("") tail = 0xe9800998ecf8427e = 16825458760271544958.
        assert_eq!(hashmod("", 1000), 958);
        assert_eq!(hashmod("x", 0), 0);
    }

    #[test]
    fn defaults_replace_and_templates() {
        // Default action replace, regex (.*), replacement $1.
        let out = run("- source_labels: [a]\n  target_label: b\n", &[("a", "v1")]).unwrap();
        assert_eq!(out, labels(&[("a", "v1"), ("b", "v1")]));
        // Anchored regex: a partial match does not replace.
        let out = run(
            "- source_labels: [a]\n  regex: 'v'\n  target_label: b\n  replacement: x\n",
            &[("a", "v1")],
        )
        .unwrap();
        assert_eq!(out.get("b"), None);
        // Templated target and named groups; `$1x` names group "1x" (empty), as in Go.
        let out = run(
            "- source_labels: [a, c]\n  separator: '-'\n  regex: '(?P<n>[a-z]+)\\d-(.*)'\n  target_label: 'l_${n}'\n  replacement: '${2}/$1x'\n",
            &[("a", "ab1"), ("c", "zz")],
        )
        .unwrap();
        assert_eq!(out.get("l_ab"), Some("zz/"));
        // Empty replacement deletes the target.
        let out = run(
            "- source_labels: [a]\n  target_label: a\n  replacement: ''\n",
            &[("a", "v"), ("b", "w")],
        )
        .unwrap();
        assert_eq!(out, labels(&[("b", "w")]));
        // Dot matches newline ((?s)).
        let out = run(
            "- source_labels: [a]\n  regex: 'x.y'\n  target_label: m\n  replacement: yes\n",
            &[("a", "x\ny")],
        )
        .unwrap();
        assert_eq!(out.get("m"), Some("yes"));
    }

    #[test]
    fn keep_drop_and_equal_actions() {
        let keep = "- source_labels: [env]\n  regex: prod|stage\n  action: keep\n";
        assert!(run(keep, &[("env", "prod")]).is_some());
        assert!(run(keep, &[("env", "dev")]).is_none());
        assert!(run(keep, &[("other", "x")]).is_none());
        let drop = "- source_labels: [env]\n  regex: dev\n  action: DROP\n";
        assert!(run(drop, &[("env", "dev")]).is_none());
        assert!(run(drop, &[("env", "prod")]).is_some());
        let ke = "- source_labels: [a]\n  target_label: b\n  action: keepequal\n";
        assert!(run(ke, &[("a", "1"), ("b", "1")]).is_some());
        assert!(run(ke, &[("a", "1"), ("b", "2")]).is_none());
        let de = "- source_labels: [a]\n  target_label: b\n  action: dropequal\n";
        assert!(run(de, &[("a", "1"), ("b", "1")]).is_none());
        assert!(run(de, &[("a", "1"), ("b", "2")]).is_some());
    }

    #[test]
    fn label_actions_and_case() {
        let out = run(
            "- regex: 'ext_(.+)'\n  action: labelmap\n  replacement: 'x_$1'\n",
            &[("ext_a", "1"), ("b", "2")],
        )
        .unwrap();
        assert_eq!(out, labels(&[("b", "2"), ("ext_a", "1"), ("x_a", "1")]));
        let out = run(
            "- regex: 'ext_.*'\n  action: labeldrop\n",
            &[("ext_a", "1"), ("b", "2")],
        )
        .unwrap();
        assert_eq!(out, labels(&[("b", "2")]));
        let out = run(
            "- regex: 'ext_.*'\n  action: labelkeep\n",
            &[("ext_a", "1"), ("b", "2")],
        )
        .unwrap();
        assert_eq!(out, labels(&[("ext_a", "1")]));
        let out = run(
            "- source_labels: [a]\n  target_label: lo\n  action: lowercase\n- source_labels: [a]\n  target_label: up\n  action: uppercase\n",
            &[("a", "MiX")],
        )
        .unwrap();
        assert_eq!(out.get("lo"), Some("mix"));
        assert_eq!(out.get("up"), Some("MIX"));
    }

    #[test]
    fn bad_configs_get_clear_errors() {
        let err = |y: &str| RelabelConfig::parse(y).unwrap_err();
        let e = err("- action: shard\n");
        assert!(
            matches!(e, RelabelError::UnknownAction { index: 0, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("\"shard\""), "{e}");
        let e = err("- action: keep\n- source_labels: [a]\n  regex: '(['\n  action: keep\n");
        assert!(matches!(e, RelabelError::Regex { index: 1, .. }), "{e}");
        let e = err("- source_labels: [a]\n  target_label: s\n  action: hashmod\n");
        assert!(
            matches!(e, RelabelError::MissingModulus { index: 0 }),
            "{e}"
        );
        let e = err("- source_labels: [a]\n  modulus: 2\n  action: hashmod\n");
        assert!(matches!(e, RelabelError::MissingTargetLabel { .. }), "{e}");
        assert!(e.to_string().contains("target_label"), "{e}");
        let e = err("- source_labels: [a]\n  action: keep\n  regexp: x\n");
        assert!(matches!(e, RelabelError::Yaml(_)), "{e}");
        assert!(e.to_string().contains("regexp"), "{e}");
        let e = err("- source_labels: [a]\n  action: labeldrop\n");
        assert!(matches!(e, RelabelError::UnexpectedField { .. }), "{e}");
        let e = err("- source_labels: [a]\n  target_label: b\n  regex: x\n  action: keepequal\n");
        assert!(matches!(e, RelabelError::UnexpectedField { .. }), "{e}");
        let e = err("action: keep\n");
        assert!(matches!(e, RelabelError::Yaml(_)), "{e}");
    }

    #[test]
    fn empty_config_keeps_everything() {
        for y in ["", "[]", "null"] {
            let c = RelabelConfig::parse(y).unwrap();
            assert!(c.is_empty());
            assert!(c.keeps_block(Ulid::nil(), &Labels::default()));
        }
    }

    #[test]
    fn block_selection_sees_external_labels_and_block_id() {
        let id: Ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let ext = labels(&[("cluster", "eu")]);
        let by_id = RelabelConfig::parse(&format!(
            "- source_labels: [__block_id]\n  regex: '{id}'\n  action: keep\n"
        ))
        .unwrap();
        assert!(by_id.keeps_block(id, &ext));
        assert!(!by_id.keeps_block(Ulid::nil(), &ext));
        // An external label named __block_id wins over the ULID, as in Thanos's label builder.
        assert!(!by_id.keeps_block(id, &labels(&[("__block_id", "other")])));
        let by_label =
            RelabelConfig::parse("- source_labels: [cluster]\n  regex: us\n  action: drop\n")
                .unwrap();
        assert!(by_label.keeps_block(id, &ext));
        assert!(!by_label.keeps_block(id, &labels(&[("cluster", "us")])));
        // Dropping every label leaves an empty set: Thanos does not serve the block.
        let all = RelabelConfig::parse("- regex: '.*'\n  action: labeldrop\n").unwrap();
        assert!(!all.keeps_block(id, &ext));
        // hashmod over __block_id: tail of md5(id) mod 3 is 1 (see the vector test).
        let shard = |n: u64| {
            RelabelConfig::parse(&format!(
                "- source_labels: [__block_id]\n  target_label: __tmp_shard\n  modulus: 3\n  action: hashmod\n- source_labels: [__tmp_shard]\n  regex: '{n}'\n  action: keep\n"
            ))
            .unwrap()
        };
        assert!(shard(1).keeps_block(id, &ext));
        assert!(!shard(0).keeps_block(id, &ext));
        assert!(!shard(2).keeps_block(id, &ext));
    }
}
