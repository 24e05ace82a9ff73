//! Text forms the Prometheus HTTP API uses: Go's float formatting, timestamps as seconds,
//! RFC 3339 times (parsed and printed) and JSON string escaping.

use std::fmt::Write;

/// Formats a sample value as Prometheus's JSON API does: Go's
/// `strconv.FormatFloat(f, 'f', -1, 64)` (shortest round-trip digits), except that magnitudes
/// below 1e-6 or from 1e21 up use the `'e'` form (`1e-07`, `1.5e+21`), like Go's
/// `encoding/json`; `NaN`, `+Inf` and `-Inf` for the special values.
pub fn format_float(f: f64) -> String {
    let abs = f.abs();
    if f.is_finite() && abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        format_float_e(f)
    } else {
        format_float_f(f)
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back to `f`,
/// never an exponent; `NaN`, `+Inf` and `-Inf` for the special values.
pub fn format_float_f(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f == f64::INFINITY {
        "+Inf".to_string()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        // Rust's `Display` for f64 prints the shortest round-trip digits in positional form,
        // which is what Go's 'f' format with precision -1 prints (including "-0").
        format!("{f}")
    }
}

/// Go's `strconv.FormatFloat(f, 'e', -1, 64)` for finite `f`: shortest digits, an exponent
/// with a sign and at least two digits (`1e-07`, `1.2345e+300`).
fn format_float_e(f: f64) -> String {
    let rust = format!("{f:e}");
    let Some((mantissa, exp)) = rust.split_once('e') else {
        return rust;
    };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

/// Writes a millisecond timestamp as Prometheus writes it in JSON: seconds, and when the
/// milliseconds are not zero, a dot and exactly three digits (`1.500`, `-0.001`).
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    let neg = t_ms < 0;
    let abs = t_ms.unsigned_abs();
    if neg {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A millisecond timestamp as Prometheus writes it in JSON (`1.500`, `-0.001`), as a string.
pub fn format_timestamp(t_ms: i64) -> String {
    let mut s = String::new();
    write_timestamp(&mut s, t_ms);
    s
}

/// Writes `s` as a JSON string the way Go's `encoding/json` does: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped as `\uXXXX` too.
pub fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 time (`2024-05-01T10:00:00Z`, `…T10:00:00.123+02:00`, up to nine
/// fraction digits) into Unix milliseconds, rounding the fraction down to milliseconds as
/// Prometheus does. `None` when the text is not RFC 3339.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (month, day, hour, min, sec) = (
        num(5, 2)?,
        num(8, 2)?,
        num(11, 2)?,
        num(14, 2)?,
        num(17, 2)?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        let padded = format!("{digits:0<3}");
        millis = padded[..3].parse().ok()?;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    Some(secs * 1000 + millis)
}

/// Formats Unix milliseconds as Go's `time.RFC3339Nano` in UTC (trailing fraction zeros
/// dropped): `2024-05-01T10:00:00.12Z`.
pub fn format_rfc3339_ms(t_ms: i64) -> String {
    let secs = t_ms.div_euclid(1000);
    let millis = t_ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if millis != 0 {
        let frac = format!("{millis:03}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An independent reference for Prometheus's sample format: Go's 'f' format built by
    /// expanding Rust's shortest scientific form (`d.ddde±x`) into positional notation, or
    /// Go's 'e' form for tiny and huge magnitudes.
    fn reference(f: f64) -> String {
        if f.is_nan() {
            return "NaN".into();
        }
        if f.is_infinite() {
            return if f > 0.0 {
                "+Inf".into()
            } else {
                "-Inf".into()
            };
        }
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').expect("exponent");
        let exp: i32 = exp.parse().expect("exponent number");
        let (sign, mantissa) = match mantissa.strip_prefix('-') {
            Some(m) => ("-", m),
            None => ("", mantissa),
        };
        let abs = f.abs();
        if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            let e = if exp < 0 {
                format!("-{:02}", -exp)
            } else {
                format!("+{exp:02}")
            };
            return format!("{sign}{mantissa}e{e}");
        }
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        // The decimal point sits after the first digit; move it by `exp`.
        let point = 1 + exp;
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        let cases = [
            (1.0, "1"),
            (-0.0, "-0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (-1.5e300, "-1.5e+300"),
            (999_999_999_999_999_900_000.0, "999999999999999900000"),
            (1e-7, "1e-07"),
            (1e-6, "0.000001"),
            (123456.789, "123456.789"),
            (123_456_789.125, "123456789.125"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(format_float(f), want, "{f:e}");
        }
        assert_eq!(format_float_f(1e21), "1000000000000000000000");
        assert_eq!(format_float_f(1e-7), "0.0000001");
    }

    proptest! {
        #[test]
        fn float_format_matches_the_reference(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            prop_assert_eq!(format_float(f), reference(f));
        }

        #[test]
        fn float_format_round_trips(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let back: f64 = format_float(f).parse().expect("parses");
            prop_assert_eq!(back.to_bits(), f.to_bits());
        }

        #[test]
        fn rfc3339_round_trips(t in -62_135_596_800_000i64..253_402_300_799_999i64) {
            let s = format_rfc3339_ms(t);
            prop_assert_eq!(parse_rfc3339_ms(&s), Some(t), "{}", s);
        }
    }

    #[test]
    fn timestamps_keep_three_fraction_digits() {
        assert_eq!(format_timestamp(1_435_781_451_781), "1435781451.781");
        assert_eq!(format_timestamp(1500), "1.500");
        assert_eq!(format_timestamp(1005), "1.005");
        assert_eq!(format_timestamp(2000), "2");
        assert_eq!(format_timestamp(-1), "-0.001");
        assert_eq!(format_timestamp(0), "0");
    }

    #[test]
    fn rfc3339_parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2015-07-01T20:10:51.781Z"),
            Some(1_435_781_451_781)
        );
        assert_eq!(
            parse_rfc3339_ms("2015-07-01T22:10:51.781999999+02:00"),
            Some(1_435_781_451_781)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.5Z"), Some(-500));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+0200",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(
            format_rfc3339_ms(1_435_781_451_780),
            "2015-07-01T20:10:51.78Z"
        );
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn json_strings_escape_like_go() {
        let mut s = String::new();
        write_json_str(&mut s, "a\"b\\c\n<&>\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u003c\u0026\u003e\u0001é""#);
        let back: String = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\n<&>\u{1}é");
    }
}
