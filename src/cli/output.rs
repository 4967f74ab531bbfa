//! Printing answers: one JSON object, or `field: value` lines for people.

use serde_json::Value;

use super::Answer;

/// Prints an answer to stdout.
pub fn print(answer: &Answer, json: bool) {
    print!("{}", text(answer, json));
}

/// Prints an answer to stderr (when stdout belongs to a command being run).
pub fn eprint(answer: &Answer, json: bool) {
    eprint!("{}", text(answer, json));
}

fn text(answer: &Answer, json: bool) -> String {
    if json {
        format!("{}\n", answer.json)
    } else {
        let mut out = String::new();
        lines(&answer.json, 0, &mut out);
        out
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => Some(
            items
                .iter()
                .filter_map(scalar)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Array(_) | Value::Object(_) => None,
        other => Some(other.to_string()),
    }
}

/// One line per field; nested objects (wallets, grants, split portions) indented under theirs.
fn lines(value: &Value, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    let Value::Object(fields) = value else {
        return;
    };
    for (key, value) in fields {
        if let Some(text) = scalar(value) {
            out.push_str(&format!("{indent}{key}: {text}\n"));
        } else if let Value::Array(items) = value {
            if items.is_empty() {
                continue;
            }
            out.push_str(&format!("{indent}{key}:\n"));
            for item in items {
                let mut nested = String::new();
                lines(item, depth + 2, &mut nested);
                // The first line of each item carries the list marker.
                let marker = format!("{indent}  - ");
                let mut first = true;
                for line in nested.lines() {
                    if first {
                        out.push_str(&format!("{marker}{}\n", line.trim_start()));
                        first = false;
                    } else {
                        out.push_str(&format!("{line}\n"));
                    }
                }
            }
        } else if let Value::Object(_) = value {
            out.push_str(&format!("{indent}{key}:\n"));
            lines(value, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_answers_print_as_indented_lines() {
        let value = json!({
            "decision": "ALLOWED",
            "reason": null,
            "amount": "3.00",
            "split": [{"grant_id": "g1", "amount": "3.00"}],
            "message": "",
        });
        let mut out = String::new();
        lines(&value, 0, &mut out);
        assert_eq!(
            out,
            "decision: ALLOWED\namount: 3.00\nsplit:\n  - grant_id: g1\n    amount: 3.00\n"
        );
    }
}
