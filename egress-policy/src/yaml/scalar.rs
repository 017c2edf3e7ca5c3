//! Typing a plain or quoted scalar as the YAML 1.2 core schema with strict
//! booleans does, for the readers that build the tree themselves (the
//! block reader and the event reader). Where only serde-saphyr can say
//! which number a scalar is, the answer is `None`.

use super::node::{Kind, Node};

/// A scalar at `line`:`column`, typed as the YAML 1.2 core schema with
/// strict booleans types it (a quoted scalar is always a string); `None`
/// where only serde-saphyr can say which number it is.
pub(super) fn typed(value: &str, plain: bool, line: usize, column: usize) -> Option<Node> {
    if !plain {
        return Some(Node { line, column, kind: Kind::Str(value.to_string()) });
    }
    let kind = match value {
        "" | "~" | "null" | "Null" | "NULL" => Kind::Null,
        "true" | "True" | "TRUE" => Kind::Bool(true, value.to_string()),
        "false" | "False" | "FALSE" => Kind::Bool(false, value.to_string()),
        v if is_decimal(v) => Kind::Int(v.parse().ok()?, v.to_string()),
        v if v.len() > 2 && v.starts_with("0x") && v[2..].bytes().all(|b| b.is_ascii_hexdigit()) => {
            Kind::Int(i128::from_str_radix(&v[2..], 16).ok()?, v.to_string())
        }
        v if is_simple_float(v) => Kind::Float(v.parse().ok()?, v.to_string()),
        v if may_be_number(v) => return None,
        v => Kind::Str(v.to_string()),
    };
    Some(Node { line, column, kind })
}

/// `0`, `443`, `-12`: no leading zeros, at most 30 digits.
fn is_decimal(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty()
        && digits.len() <= 30
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// `1.5`, `-0.25`.
fn is_simple_float(v: &str) -> bool {
    let body = v.strip_prefix('-').unwrap_or(v);
    match body.split_once('.') {
        Some((int, frac)) => {
            !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && (int == "0" || !int.starts_with('0'))
        }
        None => false,
    }
}

/// Whether some YAML reading could take `v` as a number (or infinity, or
/// not-a-number) that the forms above do not cover: serde-saphyr decides.
/// Text that no reading takes as a number (an address, `8000-8100`) stays
/// on the fast path.
fn may_be_number(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if [".inf", ".nan", "inf", "nan", "infinity"].contains(&body) || v.starts_with('+') {
        return true;
    }
    let Some(first) = body.bytes().next() else { return false };
    if !(first.is_ascii_digit() || first == b'.') {
        return false;
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')) {
        return false; // `10.0.0.0/8`, `fd00::1`
    }
    if body.matches('.').count() > 1 {
        return false; // `10.0.0.1`
    }
    // A sign inside a number only follows an exponent's `e`.
    let bytes = body.as_bytes();
    let stray_sign =
        bytes.iter().enumerate().any(|(i, b)| matches!(b, b'+' | b'-') && (i == 0 || !matches!(bytes[i - 1], b'e')));
    !stray_sign
}
