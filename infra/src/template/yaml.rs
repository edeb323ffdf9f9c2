//! A deterministic YAML emitter for JSON values. Every string is double-quoted (JSON escaping is
//! valid YAML), so no value can be read back as a boolean, number or date by accident
//! (`on`, `yes`, `2010-09-09`); maps keep their insertion order, which the template model fixes.
//! serde_yaml is archived and its forks either write such scalars unquoted or are unsound; this
//! is the 60 lines we need instead.

use serde_json::Value;

pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit_block(v, 0, &mut out);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(serde_json::to_string(s).expect("strings serialize")),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
        && !k.starts_with(['-', ':'])
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_string()
    } else {
        serde_json::to_string(k).expect("strings serialize")
    }
}

fn emit_block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, val) in map {
                match scalar(val) {
                    Some(s) => out.push_str(&format!("{pad}{}: {s}\n", key(k))),
                    None => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        emit_block(val, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        // The first line of a nested block goes after the dash.
                        let mut nested = String::new();
                        emit_block(item, indent + 2, &mut nested);
                        let trimmed = nested.trim_start_matches(' ');
                        out.push_str(&format!("{pad}- {trimmed}"));
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emits_block_yaml_with_quoted_strings() {
        let v = json!({"AWSTemplateFormatVersion": "2010-09-09", "on": "yes", "List": [1, {"a": "b", "c": [true]}, "x"], "Empty": {}});
        let y = to_yaml(&v);
        assert_eq!(
            y,
            "AWSTemplateFormatVersion: \"2010-09-09\"\n\"on\": \"yes\"\nList:\n  - 1\n  - a: \"b\"\n    c:\n      - true\n  - \"x\"\nEmpty: {}\n"
        );
    }
}
