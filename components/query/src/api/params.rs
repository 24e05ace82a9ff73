//! Request parameters as Prometheus reads them: GET query string plus form-encoded POST body
//! (body values first, like Go's `r.Form`), times, durations, limits, `match[]` selectors and
//! the Thanos options (`dedup`, `partial_response`, `max_source_resolution`).

use promql_parser::label::Matcher;
use promql_parser::parser::Expr;

use super::format::parse_rfc3339_ms;

/// Prometheus's smallest timestamp the API accepts as a default (`v1.MinTime`), ms.
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
/// Prometheus's largest timestamp the API accepts as a default (`v1.MaxTime`), ms.
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

/// The request's parameters in order: form body first, then the URL query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a form-encoded body (may be empty) and a URL query string (may be empty).
    pub fn parse(body: &[u8], query: &str) -> Self {
        let mut v: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        v.extend(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
        Params(v)
    }

    /// The first value of `name`, `""` when absent (Go's `FormValue`).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Every value of `name` in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Go's `%q` of an ASCII-ish string, for error messages.
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Parses a time parameter: Unix seconds as a float (rounded to ms) or RFC 3339. The error
/// is Prometheus's `cannot parse "x" to a valid timestamp`.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let err = || format!("cannot parse {} to a valid timestamp", quote(s));
    if let Ok(t) = s.parse::<f64>() {
        // Beyond ±2^53 ms a float has no millisecond precision left; Go's conversion is
        // undefined there, so such times are refused.
        if !t.is_finite() || t.abs() > 9.0e15 {
            return Err(err());
        }
        let secs = t.trunc();
        let frac = ((t - secs) * 1000.0).round();
        return Ok(secs as i64 * 1000 + frac as i64);
    }
    parse_rfc3339_ms(s).ok_or_else(err)
}

/// Parses the optional time parameter `name`, `default` when it is absent; the error names
/// the parameter as Prometheus's does (`invalid time value for 'time': …`).
pub fn parse_time_or(name: &str, s: &str, default: i64) -> Result<i64, String> {
    if s.is_empty() {
        Ok(default)
    } else {
        parse_time(s).map_err(|e| format!("invalid time value for '{name}': {e}"))
    }
}

/// Parses a Prometheus duration (`1h30m`, `5m`, `1y2w3d`, `500ms`, `0`) into milliseconds.
pub fn parse_prometheus_duration(s: &str) -> Result<i64, String> {
    let err = || format!("not a valid duration string: {}", quote(s));
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    // Units must appear in this order, each at most once.
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let pos = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(err)?;
        let (_, mult) = UNITS[next_unit + pos];
        next_unit += pos + 1;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// Parses a duration parameter (`step`, `timeout`, …): float seconds or a Prometheus duration;
/// nanoseconds, as Go's `time.Duration`.
pub fn parse_duration_ns(s: &str) -> Result<i64, String> {
    if let Ok(d) = s.parse::<f64>() {
        let ns = d * 1e9;
        if !ns.is_finite() || ns >= i64::MAX as f64 || ns <= i64::MIN as f64 {
            return Err(format!(
                "cannot parse {} to a valid duration. It overflows int64",
                quote(s)
            ));
        }
        return Ok(ns as i64);
    }
    match parse_prometheus_duration(s) {
        Ok(ms) => ms
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("cannot parse {} to a valid duration", quote(s))),
        Err(_) => Err(format!("cannot parse {} to a valid duration", quote(s))),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            quote(s)
        )),
    }
}

/// Prometheus's `limit` parameter: absent = 0 (no limit), else a non-negative integer.
pub fn parse_limit(s: &str) -> Result<usize, String> {
    if s.is_empty() {
        return Ok(0);
    }
    let n: i64 = s
        .parse()
        .map_err(|_| format!("strconv.Atoi: parsing {}: invalid syntax", quote(s)))?;
    if n < 0 {
        return Err("limit must be non-negative".into());
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

const EMPTY_MATCHERS: &str = "match[] must contain at least one non-empty matcher";

/// Parses every `match[]` value as a series selector. A selector with `or` alternatives gives
/// one matcher set per alternative. Each set must hold a matcher that rejects the empty
/// string, as Prometheus requires.
pub fn parse_match_sets(values: &[&str]) -> Result<Vec<Vec<Matcher>>, String> {
    let mut sets = Vec::new();
    for v in values {
        let expr = promql_parser::parser::parse(v).map_err(|e| {
            // promql-parser refuses such selectors itself; Prometheus's API words it so.
            if e.contains("at least one non-empty matcher") {
                EMPTY_MATCHERS.to_string()
            } else {
                format!("parse error: {e}")
            }
        })?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(format!(
                "parse error: expected a series selector, got {} ({})",
                quote(v),
                expr.value_type()
            ));
        };
        let name_matcher = vs
            .name
            .as_ref()
            .map(|n| Matcher::new(promql_parser::label::MatchOp::Equal, "__name__", n));
        let with_name = |mut ms: Vec<Matcher>| {
            if let Some(m) = &name_matcher {
                ms.push(m.clone());
            }
            ms
        };
        if vs.matchers.or_matchers.is_empty() {
            sets.push(with_name(vs.matchers.matchers.clone()));
        } else {
            for alt in &vs.matchers.or_matchers {
                sets.push(with_name(alt.clone()));
            }
        }
    }
    for set in &sets {
        if !set.iter().any(|m| !m.is_match("")) {
            return Err(EMPTY_MATCHERS.into());
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_values_come_before_query_values() {
        let p = Params::parse(b"query=up&match%5B%5D=a", "query=down&match[]=b&time=1");
        assert_eq!(p.get("query"), "up");
        assert_eq!(p.get("time"), "1");
        assert_eq!(p.get("absent"), "");
        assert_eq!(p.all("match[]"), vec!["a", "b"]);
    }

    #[test]
    fn times_parse_as_prometheus_does() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1.25"), Ok(1250));
        assert_eq!(parse_time("0.0006"), Ok(1));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("1e3"), Ok(1_000_000));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("abc"),
            Err(r#"cannot parse "abc" to a valid timestamp"#.into())
        );
        assert!(parse_time("NaN").is_err());
        assert!(parse_time("1e300").is_err());
        assert_eq!(parse_time_or("time", "", 42), Ok(42));
        assert_eq!(
            parse_time_or("time", "x", 42),
            Err(r#"invalid time value for 'time': cannot parse "x" to a valid timestamp"#.into())
        );
    }

    #[test]
    fn durations_parse_as_prometheus_does() {
        assert_eq!(parse_prometheus_duration("1h30m"), Ok(5_400_000));
        assert_eq!(
            parse_prometheus_duration("1y2w3d"),
            Ok((365 + 14 + 3) * 86_400_000)
        );
        assert_eq!(parse_prometheus_duration("500ms"), Ok(500));
        assert_eq!(parse_prometheus_duration("0"), Ok(0));
        for bad in [
            "",
            "5",
            "1m1h",
            "1h1h",
            "1.5h",
            "1x",
            "-1m",
            "99999999999999999999y",
        ] {
            assert!(parse_prometheus_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_ns("15"), Ok(15_000_000_000));
        assert_eq!(parse_duration_ns("0.5"), Ok(500_000_000));
        assert_eq!(parse_duration_ns("1m"), Ok(60_000_000_000));
        assert_eq!(
            parse_duration_ns("x"),
            Err(r#"cannot parse "x" to a valid duration"#.into())
        );
        assert_eq!(
            parse_duration_ns("1e20"),
            Err(r#"cannot parse "1e20" to a valid duration. It overflows int64"#.into())
        );
    }

    #[test]
    fn bools_and_limits() {
        assert_eq!(parse_go_bool("true"), Ok(true));
        assert_eq!(parse_go_bool("0"), Ok(false));
        assert_eq!(
            parse_go_bool("yes"),
            Err(r#"strconv.ParseBool: parsing "yes": invalid syntax"#.into())
        );
        assert_eq!(parse_limit(""), Ok(0));
        assert_eq!(parse_limit("5"), Ok(5));
        assert_eq!(parse_limit("-1"), Err("limit must be non-negative".into()));
        assert!(parse_limit("x").is_err());
    }

    #[test]
    fn match_sets_need_a_non_empty_matcher() {
        let sets = parse_match_sets(&["up{job=\"a\"}", "{__name__=~\"x.*\"}"]).expect("ok");
        assert_eq!(sets.len(), 2);
        assert!(
            sets[0]
                .iter()
                .any(|m| m.name == "__name__" && m.value == "up")
        );
        assert!(sets[0].iter().any(|m| m.name == "job" && m.value == "a"));
        assert_eq!(
            parse_match_sets(&["{job=~\".*\"}"]),
            Err("match[] must contain at least one non-empty matcher".into())
        );
        assert!(parse_match_sets(&["rate(x[5m])"]).is_err());
        assert!(parse_match_sets(&["{"]).is_err());
    }
}
