//! Go's text formatting where our output must match Go tools byte for byte: `%g` for floats and
//! `strconv.Quote` for strings (how `promtool tsdb dump` prints samples and label values).

use std::fmt::Write;

/// Formats `v` as Go's `fmt.Sprintf("%g", v)`: the shortest digits that round-trip, in exponent form
/// when the decimal exponent is below -4 or at least 6 (Go's rule for the shortest precision).
pub fn format_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let a = v.abs();
    if a == 0.0 {
        out.push('0');
        return out;
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.234567e6", "5e-324".
    let sci = format!("{a:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// Quotes `s` as Go's `strconv.Quote` does for valid UTF-8 input.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn is_go_printable(c: char) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(bits, fmt.Sprintf("%g", math.Float64frombits(bits)))`, printed by Go 1.26.
    const FLOATS: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "-0"),
        (0x3ff0000000000000, "1"),
        (0xbff0000000000000, "-1"),
        (0x3fe0000000000000, "0.5"),
        (0x412e848000000000, "1e+06"),
        (0x412e847e00000000, "999999"),
        (0x40fe240000000000, "123456"),
        (0x4132d68700000000, "1.234567e+06"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x4415af1d78b58c40, "1e+20"),
        (0x3f1a36e2eb1c432d, "0.0001"),
        (0x3ee4f8b588e368f1, "1e-05"),
        (0x3f202e4b6ce5dc68, "0.00012345"),
        (0x3e8421f5f40d8376, "1.5e-07"),
        (0x7ff0000000000000, "+Inf"),
        (0xfff0000000000000, "-Inf"),
        (0x7ff8000000000001, "NaN"),
        (0x7ff0000000000002, "NaN"),
        (0x400921fb54442d18, "3.141592653589793"),
        (0x3fd5555555555555, "0.3333333333333333"),
        (0x7e4ddd4baa009303, "2.5e+300"),
        (0x0000000000000001, "5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0x4059000000000000, "100"),
        (0x40f86a0000000000, "100000"),
        (0x40c81cd6c8b43958, "12345.678"),
        (0x3fb999999999999a, "0.1"),
        (0x3fd3333333333333, "0.3"),
        (0x54b249ad2594c37d, "1e+100"),
        (0x3c36b082c2148b8e, "1.23e-18"),
        (0x432dd7c1681d0000, "4.2e+15"),
        (0x4340000000000000, "9.007199254740992e+15"),
    ];

    /// `(s, strconv.Quote(s))`, printed by Go 1.26 (valid UTF-8 inputs only).
    const STRINGS: &[(&str, &str)] = &[
        ("plain", "\"plain\""),
        ("with \"quotes\"", "\"with \\\"quotes\\\"\""),
        ("back\\slash", "\"back\\\\slash\""),
        ("new\nline", "\"new\\nline\""),
        ("tab\t", "\"tab\\t\""),
        ("ünïcödé", "\"ünïcödé\""),
        ("\x00\x7f", "\"\\x00\\x7f\""),
        ("emoji 🙂", "\"emoji 🙂\""),
        ("\u{200b}", "\"\\u200b\""),
        ("bell\x07", "\"bell\\a\""),
    ];

    #[test]
    fn floats_format_like_go() {
        for (bits, want) in FLOATS {
            assert_eq!(format_g(f64::from_bits(*bits)), *want, "bits {bits:#018x}");
        }
    }

    #[test]
    fn strings_quote_like_go() {
        for (s, want) in STRINGS {
            assert_eq!(quote(s), *want, "input {s:?}");
        }
    }
}
