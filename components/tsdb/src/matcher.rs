//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus semantics: regexes are fully anchored
//! and `.` matches newlines; a missing label matches as the empty string.

use std::fmt;

use regex::Regex;

use crate::error::{Error, Result};

/// The matching operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    RegexMatch,
    /// `!~`
    RegexNoMatch,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

/// How a regex can be evaluated without running the regex engine.
#[derive(Debug, Clone)]
pub(crate) enum FastPath {
    /// Matches exactly these strings (sorted, de-duplicated): `a|b|c`, or a plain literal.
    Set(Vec<String>),
    /// `prefix.*`
    Prefix(String),
    /// `.*`
    Any,
    /// `.+`
    NonEmpty,
    /// Needs the regex engine.
    None,
}

/// A label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
    re: Option<Regex>,
    fast: FastPath,
}

fn is_literal(s: &str) -> bool {
    !s.chars().any(regex_syntax_meta)
}

/// Characters that make a pattern more than a literal.
fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    ) || c.is_whitespace()
}

fn fast_path(re: &str) -> FastPath {
    if re == ".*" {
        return FastPath::Any;
    }
    if re == ".+" {
        return FastPath::NonEmpty;
    }
    if let Some(p) = re.strip_suffix(".*")
        && is_literal(p)
    {
        return FastPath::Prefix(p.to_string());
    }
    if re.split('|').all(is_literal) {
        let mut v: Vec<String> = re.split('|').map(str::to_string).collect();
        v.sort();
        v.dedup();
        return FastPath::Set(v);
    }
    FastPath::None
}

impl Matcher {
    /// Builds a matcher; compiles (anchored) regexes unless a fast path decides them (`.*`,
    /// `.+`, `prefix.*`, `a|b|c`: always valid, and compiling is most of a small request's cost).
    /// Errors on an invalid regex.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let value = value.into();
        let (re, fast) = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => match fast_path(&value) {
                FastPath::None => {
                    let re = Regex::new(&format!("^(?s:{value})$"))
                        .map_err(|e| Error::InvalidMatcher(format!("{name}{op}{value:?}: {e}")))?;
                    (Some(re), FastPath::None)
                }
                fast => (None, fast),
            },
            _ => (None, FastPath::None),
        };
        Ok(Matcher {
            name,
            op,
            value,
            re,
            fast,
        })
    }

    /// `name = value`.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
            fast: FastPath::None,
        }
    }

    /// Whether a label value (`""` for a missing label) matches.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::RegexMatch => self.regex_matches(v),
            MatchOp::RegexNoMatch => !self.regex_matches(v),
        }
    }

    fn regex_matches(&self, v: &str) -> bool {
        match &self.fast {
            FastPath::Set(s) => s.binary_search_by(|x| x.as_str().cmp(v)).is_ok(),
            FastPath::Prefix(p) => v.starts_with(p.as_str()),
            FastPath::Any => true,
            FastPath::NonEmpty => !v.is_empty(),
            FastPath::None => self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// For `=~` matchers whose regex is a set of literals, those literals.
    pub(crate) fn literal_set(&self) -> Option<&[String]> {
        match (&self.op, &self.fast) {
            (MatchOp::RegexMatch, FastPath::Set(s)) => Some(s),
            _ => None,
        }
    }

    /// For regex matchers of the form `prefix.*`, the prefix.
    pub(crate) fn prefix(&self) -> Option<&str> {
        match (&self.op, &self.fast) {
            (MatchOp::RegexMatch, FastPath::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchoring_and_fast_paths() {
        let m = Matcher::new(MatchOp::RegexMatch, "a", "foo|bar").unwrap();
        assert!(m.matches("foo") && m.matches("bar") && !m.matches("foobar") && !m.matches(""));
        assert_eq!(m.literal_set().map(<[String]>::len), Some(2));
        let m = Matcher::new(MatchOp::RegexMatch, "a", "fo.*").unwrap();
        assert!(m.matches("fo") && m.matches("fo\nx") && !m.matches("xfo"));
        assert_eq!(m.prefix(), Some("fo"));
        let m = Matcher::new(MatchOp::RegexMatch, "a", "b.r").unwrap();
        assert!(m.matches("bar") && m.matches("b\nr") && !m.matches("bars"));
        let m = Matcher::new(MatchOp::RegexMatch, "a", "a|b.c").unwrap();
        assert!(m.matches("a") && m.matches("bxc") && !m.matches("ab"));
        let m = Matcher::new(MatchOp::RegexNoMatch, "a", ".+").unwrap();
        assert!(m.matches("") && !m.matches("x"));
        let m = Matcher::new(MatchOp::RegexMatch, "a", "a-b").unwrap();
        assert!(m.matches("a-b"));
        assert!(Matcher::new(MatchOp::RegexMatch, "a", "(").is_err());
        assert!(
            Matcher::new(MatchOp::NotEqual, "a", "x")
                .unwrap()
                .matches("")
        );
    }

    #[test]
    fn fast_paths_agree_with_the_regex_they_skip() {
        let inputs = [
            "",
            "a",
            "ab",
            "abc",
            "b",
            "a\nb",
            "x",
            "api",
            "apiserver",
            "ns-1",
        ];
        for pattern in [".*", ".+", "a.*", "api.*", "a|b", "a|", "api|db|x", "ab"] {
            let fast = Matcher::new(MatchOp::RegexMatch, "l", pattern).unwrap();
            assert!(fast.re.is_none(), "{pattern} takes a fast path");
            let re = Regex::new(&format!("^(?s:{pattern})$")).unwrap();
            for v in inputs {
                assert_eq!(fast.matches(v), re.is_match(v), "{pattern} on {v:?}");
            }
        }
    }
}
