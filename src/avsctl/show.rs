//! `avsctl show` and `avsctl watch`: properties as `Interface.Property=value`
//! lines, one per property, in the style of `timedatectl show`, for scripts.

use zbus::zvariant::Value;

/// The prefix every avsd interface name shares; keys drop it.
pub const PREFIX: &str = "org.avsd.Avs1.";

/// `Dialog.State` for `org.avsd.Avs1.Dialog` and `State`.
pub fn key(interface: &str, property: &str) -> String {
    format!(
        "{}.{property}",
        interface.strip_prefix(PREFIX).unwrap_or(interface)
    )
}

/// A value as one line: booleans `yes`/`no` (as systemd's `show` prints
/// them), arrays space-separated, dictionaries `key=value` pairs, and line
/// breaks escaped so every property stays one line.
pub fn format(v: &Value<'_>) -> String {
    let text = match v {
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Str(s) => s.to_string(),
        Value::U8(n) => n.to_string(),
        Value::I16(n) => n.to_string(),
        Value::U16(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::Value(inner) => format(inner),
        Value::Array(a) => a.iter().map(format).collect::<Vec<_>>().join(" "),
        Value::Dict(d) => {
            let mut pairs: Vec<String> = d
                .iter()
                .map(|(k, v)| format!("{}={}", format(k), format(v)))
                .collect();
            pairs.sort();
            pairs.join(" ")
        }
        other => other.to_string(),
    };
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_and_values_are_one_line_each() {
        assert_eq!(key("org.avsd.Avs1.Dialog", "LastError"), "Dialog.LastError");
        assert_eq!(format(&Value::from(true)), "yes");
        assert_eq!(format(&Value::from(42u8)), "42");
        assert_eq!(format(&Value::from("two\nlines")), "two\\nlines");
        assert_eq!(format(&Value::from(vec!["a", "b"])), "a b");
        let mut m = HashMap::new();
        m.insert("xesam:title", Value::from("Song"));
        assert_eq!(format(&Value::from(m)), "xesam:title=Song");
        assert_eq!(format(&Value::Value(Box::new(Value::from(7u32)))), "7");
    }
}
