//! A parser for the OpenMetrics text format, as far as backfilling needs it: samples with their
//! labels, values and timestamps (seconds, converted to ms as Prometheus does by truncation).
//! Metadata lines (`# TYPE`, `# HELP`, `# UNIT`) are accepted and skipped; exemplars are ignored.

use crate::{Error, Labels, Result};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct OmSample {
    /// Labels, `__name__` included.
    pub labels: Labels,
    /// The value.
    pub value: f64,
    /// Timestamp in ms.
    pub t: i64,
}

fn err(line: usize, what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("openmetrics input line {line}: {what}"))
}

/// Iterates the samples of `input`, in input order. Every sample must carry a timestamp, and the input
/// must end with `# EOF`.
pub fn parse(input: &str) -> impl Iterator<Item = Result<OmSample>> + '_ {
    let mut lines = input.split('\n').enumerate();
    let mut seen_eof = false;
    let mut done = false;
    // The type from the latest `# TYPE` line: it decides whether `le` / `quantile` are normalised.
    let mut family_type = String::new();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        loop {
            let Some((i, line)) = lines.next() else {
                done = true;
                return (!seen_eof).then(|| Err(err(i_last(input), "missing `# EOF` at the end")));
            };
            let n = i + 1;
            if seen_eof {
                if line.is_empty() && lines.clone().next().is_none() {
                    done = true;
                    return None;
                }
                done = true;
                return Some(Err(err(n, "data after `# EOF`")));
            }
            if line == "# EOF" {
                seen_eof = true;
                continue;
            }
            if line.starts_with('#') {
                if let Some(decl) = line.strip_prefix("# TYPE ") {
                    family_type = decl.rsplit(' ').next().unwrap_or_default().to_string();
                    continue;
                }
                if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                    continue;
                }
                done = true;
                return Some(Err(err(n, format!("unexpected comment {line:?}"))));
            }
            if line.is_empty() {
                done = true;
                if lines.clone().next().is_none() {
                    return Some(Err(err(n, "missing `# EOF` at the end")));
                }
                return Some(Err(err(n, "empty line")));
            }
            let parsed = parse_sample(line, &family_type).map_err(|what| err(n, what));
            if parsed.is_err() {
                done = true;
            }
            return Some(parsed);
        }
    })
}

fn i_last(input: &str) -> usize {
    input.split('\n').count()
}

fn parse_sample(line: &str, family_type: &str) -> std::result::Result<OmSample, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut name: Option<String> = None;
    let rest;
    if let Some(brace) = line
        .find(['{', ' '])
        .filter(|&i| line.as_bytes()[i] == b'{')
    {
        if brace > 0 {
            name = Some(line[..brace].to_string());
        }
        let (labels_end, parsed) = parse_labels(&line[brace + 1..], name.is_none())?;
        if let Some(quoted_name) = parsed.0 {
            name = Some(quoted_name);
        }
        pairs.extend(parsed.1);
        rest = &line[brace + 1 + labels_end..];
    } else {
        let end = line.find(' ').ok_or("no value")?;
        name = Some(line[..end].to_string());
        rest = &line[end..];
    }
    let name = name.ok_or("no metric name")?;
    let legacy_name = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if name.is_empty() || (!legacy_name && !line.starts_with('{')) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected a space before the value")?;
    // Exemplars follow " # ".
    let rest = rest.split(" # ").next().unwrap_or(rest);
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value = parse_float(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    let ts = fields
        .next()
        .ok_or("no timestamp (backfilling needs one on every sample)")?;
    let ts_s = parse_float(ts).ok_or_else(|| format!("invalid timestamp {ts:?}"))?;
    if !ts_s.is_finite() {
        return Err(format!("invalid timestamp {ts:?}"));
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    // As Prometheus: `le` of histograms and `quantile` of summaries in OpenMetrics float form.
    let normalised = match family_type {
        "histogram" => Some("le"),
        "summary" => Some("quantile"),
        _ => None,
    };
    if let Some(label) = normalised {
        for (n, v) in pairs.iter_mut() {
            if n == label
                && let Some(f) = parse_float(v)
            {
                *v = format_openmetrics_float(f);
            }
        }
    }
    pairs.push(("__name__".to_string(), name));
    let labels = Labels::new(pairs).map_err(|e| e.to_string())?;
    Ok(OmSample {
        labels,
        value,
        // As Prometheus: seconds × 1000, truncated toward zero.
        t: (ts_s * 1000.0) as i64,
    })
}

/// A float as OpenMetrics writes it: Go's shortest `%g`, with `.0` added to integers.
pub fn format_openmetrics_float(f: f64) -> String {
    let s = super::gofmt::format_g(f);
    if f.is_finite() && !s.contains(['e', '.']) {
        s + ".0"
    } else {
        s
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

type ParsedLabels = (Option<String>, Vec<(String, String)>);

/// Parses `a="1",b="2"}` (after the `{`); returns the offset just past `}`. With `name_allowed`,
/// a lone quoted string is the metric name (`{"my.metric",a="1"}`).
fn parse_labels(s: &str, name_allowed: bool) -> std::result::Result<(usize, ParsedLabels), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut name = None;
    let mut pairs = Vec::new();
    loop {
        if b.get(i) == Some(&b'}') {
            return Ok((i + 1, (name, pairs)));
        }
        let label = if b.get(i) == Some(&b'"') {
            let (len, v) = parse_quoted(&s[i..])?;
            i += len;
            v
        } else {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if start == i {
                return Err(format!("expected a label name at {:?}", &s[start..]));
            }
            s[start..i].to_string()
        };
        if b.get(i) == Some(&b'=') {
            i += 1;
            if b.get(i) != Some(&b'"') {
                return Err(format!("label {label:?}: value must be quoted"));
            }
            let (len, value) = parse_quoted(&s[i..])?;
            i += len;
            pairs.push((label, value));
        } else if name_allowed && name.is_none() {
            name = Some(label);
        } else {
            return Err(format!("label {label:?} has no value"));
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err("expected `,` or `}` after a label".to_string()),
        }
    }
}

/// Parses a `"…"` string with `\\`, `\"`, `\n` escapes; returns its length in bytes and its value.
fn parse_quoted(s: &str) -> std::result::Result<(usize, String), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((i + 1, out)),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => return Err(format!("invalid escape {other:?} in a label value")),
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Result<Vec<OmSample>> {
        parse(input).collect()
    }

    #[test]
    fn parses_samples_metadata_and_escapes() {
        let input = "# TYPE x counter\n# HELP x Some help.\nx_total{a=\"1\",b=\"q\\\"\\n\\\\\"} 1.5 1700000000.123\nup 1 1700000015\n{\"my.metric\",k=\"v\"} NaN 1\n# EOF\n";
        let got = all(input).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].labels.get("__name__"), Some("x_total"));
        assert_eq!(got[0].labels.get("b"), Some("q\"\n\\"));
        assert_eq!(got[0].value, 1.5);
        assert_eq!(got[0].t, 1_700_000_000_123);
        assert_eq!(got[1].labels.len(), 1);
        assert_eq!(got[2].labels.get("__name__"), Some("my.metric"));
        assert!(got[2].value.is_nan());
    }

    #[test]
    fn le_and_quantile_values_are_normalised_like_prometheus() {
        let input = "# TYPE h histogram\nh_bucket{le=\"1\"} 1 1\nh_bucket{le=\"0.25\"} 1 1\nh_bucket{le=\"+Inf\"} 1 1\nh_bucket{le=\"1e9\"} 1 1\n# TYPE s summary\ns{quantile=\"0\"} 1 1\n# TYPE g gauge\ng{le=\"1\"} 1 1\n# EOF\n";
        let got: Vec<String> = all(input)
            .unwrap()
            .iter()
            .map(|s| {
                s.labels
                    .get("le")
                    .or(s.labels.get("quantile"))
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(got, ["1.0", "0.25", "+Inf", "1e+09", "0.0", "1"]);
    }

    #[test]
    fn rejects_bad_input_with_the_line_number() {
        for (input, want) in [
            ("up 1\n# EOF\n", "line 1: no timestamp"),
            (
                "up{a=1} 1 1\n# EOF\n",
                "line 1: label \"a\": value must be quoted",
            ),
            ("up 1 1\n", "missing `# EOF`"),
            ("up 1 1\n# EOF\nup 2 2\n", "line 3: data after `# EOF`"),
            ("up x 1\n# EOF\n", "line 1: invalid value \"x\""),
            ("up{a=\"1} 1 1\n# EOF\n", "unterminated label value"),
        ] {
            let e = all(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }
}
