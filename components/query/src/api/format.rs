//! Text forms the Prometheus HTTP API uses: Go's float formatting, timestamps as seconds,
//! RFC 3339 times (parsed and printed) and JSON string escaping.

use std::fmt::Write;

/// Formats a sample value as Prometheus's JSON API does: Go's
/// `strconv.FormatFloat(f, 'f', -1, 64)` (shortest round-trip digits), except that magnitudes
/// below 1e-6 or from 1e21 up use the `'e'` form (`1e-07`, `1.5e+21`), like Go's
/// `encoding/json`; `NaN`, `+Inf` and `-Inf` for the special values.
pub fn format_float(f: f64) -> String {
    let mut s = String::new();
    write_float(&mut s, f);
    s
}

/// Appends [`format_float`]'s text to `out`.
pub fn write_float(out: &mut String, f: f64) {
    write_go_float(out, f, true);
}

/// Go's shortest float text: the shortest digits that read back to `f` (from `ryu`; of two
/// equally near, the even one, as Go picks), in positional form, or with `exponent_form` in the
/// `'e'` form for magnitudes below 1e-6 or from 1e21 up.
fn write_go_float(out: &mut String, f: f64, exponent_form: bool) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    if f == 0.0 {
        out.push('0');
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(f.abs());
    // ryu writes `ddd.ddd`, `ddd.0`, `0.000ddd` (for magnitudes from 1e-5 to below 1e16, where
    // Go's form is positional too) or `d.ddde±x` (the exponent within its last five bytes).
    let Some(e_at) = text.bytes().rposition(|b| b == b'e') else {
        out.push_str(text.strip_suffix(".0").unwrap_or(text));
        return;
    };
    // Gather the significant digits and where the decimal point sits relative to the first.
    let mantissa = &text[..e_at];
    let exp = text[e_at + 1..].parse::<i32>().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    for b in int.bytes().chain(frac.bytes()).take(digits.len()) {
        digits[n] = b;
        n += 1;
    }
    let mut point = int.len() as i32 + exp;
    let mut first = 0;
    while first + 1 < n && digits[first] == b'0' {
        first += 1;
        point -= 1;
    }
    while n > first + 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let sig = std::str::from_utf8(&digits[first..n]).unwrap_or("0");
    if exponent_form && !(1e-6..1e21).contains(&f.abs()) {
        out.push_str(&sig[..1]);
        if sig.len() > 1 {
            out.push('.');
            out.push_str(&sig[1..]);
        }
        let e = point - 1;
        out.push_str(if e < 0 { "e-" } else { "e+" });
        if e.abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(e.unsigned_abs()));
        return;
    }
    if point <= 0 {
        out.push_str("0.");
        for _ in 0..-point {
            out.push('0');
        }
        out.push_str(sig);
    } else if point as usize >= sig.len() {
        out.push_str(sig);
        for _ in sig.len()..point as usize {
            out.push('0');
        }
    } else {
        out.push_str(&sig[..point as usize]);
        out.push('.');
        out.push_str(&sig[point as usize..]);
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest digits that read back to `f`,
/// never an exponent; `NaN`, `+Inf` and `-Inf` for the special values.
pub fn format_float_f(f: f64) -> String {
    let mut s = String::new();
    write_go_float(&mut s, f, false);
    s
}

/// Writes a millisecond timestamp as Prometheus writes it in JSON: seconds, and when the
/// milliseconds are not zero, a dot and exactly three digits (`1.500`, `-0.001`).
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    let neg = t_ms < 0;
    let abs = t_ms.unsigned_abs();
    if neg {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(abs / 1000));
    let frac = abs % 1000;
    if frac != 0 {
        out.push('.');
        if frac < 100 {
            out.push('0');
        }
        if frac < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(frac));
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
    /// Go's 'e' form for tiny and huge magnitudes. (Of two equally near shortest forms, Rust may
    /// pick the odd one.)
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

    /// Values exactly halfway between two shortest forms, as Go's `strconv.FormatFloat(f, 'f',
    /// -1, 64)` prints them (the even digit); Rust's `Display` picks the other for some.
    #[test]
    fn ties_take_the_even_digit_as_go_does() {
        let go = [
            (14044323937288778996u64, "-206371836716967.62"),
            (4819978371041863412, "175949043212599.62"),
            (4832983082256502393, "1281070428832670.2"),
            (14055920609271147741, "-1172442968800055.2"),
            (4816594494677468808, "105470197590298.12"),
            (14054109825364350694, "-922823449471708.8"),
            (4807702662297946000, "26818201253895.562"),
            (14040774543616451192, "-118095386406025.88"),
        ];
        for (bits, want) in go {
            let f = f64::from_bits(bits);
            assert_eq!(format_float(f), want);
            assert_eq!(format_float_f(f), want);
        }
    }

    proptest! {
        /// Equal to the reference, but for a tie (see above), where only the last digit may differ.
        #[test]
        fn float_format_matches_the_reference(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            let (got, want) = (format_float(f), reference(f));
            if got != want {
                prop_assert_eq!(got.len(), want.len(), "{} vs {}", got, want);
                prop_assert_eq!(&got[..got.len() - 1], &want[..want.len() - 1]);
                prop_assert_eq!(got.parse::<f64>().ok(), Some(f));
            }
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
