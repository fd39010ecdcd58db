//! A guard for JSON text that would not survive a round trip through `serde_json::Value`.
//!
//! Ferry builds `serde_json` with `arbitrary_precision`, so numerics keep every digit. That
//! feature carries a number through `Value` as an object with one reserved key,
//! `$serde_json::private::Number`; a JSON object in the data with exactly that key is read
//! back as a number and written out changed (item 11 of the review). Rows whose text holds
//! the key (literally, or spelled with `\u` escapes) are refused by name instead of changed.

/// The key `serde_json` reserves under `arbitrary_precision`.
pub const RESERVED_KEY: &str = "$serde_json::private::Number";

/// Whether `text` (JSON) holds a string equal to [`RESERVED_KEY`], however it is escaped.
pub fn has_reserved_key(text: &str) -> bool {
    // The key's plain spelling contains this; any other spelling needs a `\u` escape.
    if !text.contains("private::Number") && !text.contains("\\u") {
        return false;
    }
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '"' && decode_string(&mut chars).as_deref() == Some(RESERVED_KEY) {
            return true;
        }
    }
    false
}

/// Decodes the JSON string whose opening quote was just read; `None` if it is malformed.
fn decode_string(chars: &mut std::str::Chars<'_>) -> Option<String> {
    let mut out = String::new();
    let mut pending_high: Option<u32> = None;
    loop {
        let c = chars.next()?;
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = u32::from_str_radix(&hex, 16).ok()?;
                    match (pending_high.take(), unit) {
                        (None, 0xD800..=0xDBFF) => pending_high = Some(unit),
                        (Some(high), 0xDC00..=0xDFFF) => {
                            let code = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                            out.push(char::from_u32(code)?);
                        }
                        (_, unit) => out.push(char::from_u32(unit).unwrap_or('\u{FFFD}')),
                    }
                }
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_reserved_key_however_spelled() {
        assert!(has_reserved_key(
            r#"{"doc": {"$serde_json::private::Number": "1"}}"#
        ));
        assert!(has_reserved_key(
            r#"{"doc": {"\u0024serde_json::\u0070rivate::Number": "1"}}"#
        ));
        assert!(!has_reserved_key(
            r#"{"doc": {"number": 1.000000000000000000001}}"#
        ));
        assert!(!has_reserved_key(
            r#"{"note": "about serde_json::private::Numbers"}"#
        ));
        assert!(!has_reserved_key(r#"{"note": "\u00e9t\u00e9 \"quoted\""}"#));
    }
}
