//! What constrains a model's reply to the calls of an [`Offer`], with the
//! arguments the offer shows (required fields first, in order):
//!
//! - [`offer_grammar`]: a llama.cpp GBNF grammar for lines
//!   `[SYS_CALL::NAME] {"arg": value, ...}`, one rule per call whose
//!   object has the call's fields and their types;
//! - [`offer_reply_schema`]: the JSON schema of
//!   `{"calls": [{"name", "arguments"}]}` with `maxItems`;
//! - [`offer_tools`]: native tool specifications (name, description,
//!   schema).
//!
//! A limit on calls per reply bounds both constraints, so a constrained
//! model cannot write calls until it runs out of tokens.

use super::describe;
use super::offer::Offer;
use crate::abi::calls::Call;
use serde_json::{Value, json};

/// Calls per reply when the model configuration sets no limit.
pub const DEFAULT_MAX_CALLS: usize = 8;

/// Native tool specifications (name, description, parameters).
pub fn offer_tools(offer: &Offer) -> Vec<(String, String, Value)> {
    offer
        .calls()
        .iter()
        .map(|c| {
            (
                c.name().to_string(),
                describe(*c).to_string(),
                offer.schema(*c),
            )
        })
        .collect()
}

/// A JSON schema for a whole reply, `{"calls": [...]}` with 1 to
/// `max_calls` calls, each branch tying a name to its arguments.
pub fn offer_reply_schema(offer: &Offer, max_calls: usize) -> Value {
    let branches: Vec<Value> = offer
        .calls()
        .iter()
        .map(|c| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": c.name()},
                    "arguments": offer.schema(*c),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({
        "type": "object",
        "properties": {
            "calls": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_calls.max(1),
                "items": {"anyOf": branches},
            },
        },
        "required": ["calls"],
        "additionalProperties": false,
    })
}

/// The GBNF rule name of a call: `FS_WRITE` → `fs-write`.
fn rule(call: Call) -> String {
    call.name().to_ascii_lowercase().replace('_', "-")
}

/// A GBNF string literal of `text`.
fn literal(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The grammar of one field's value.
fn value_rule(schema: &Value) -> String {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let alts: Vec<String> = options.iter().map(|o| literal(&o.to_string())).collect();
        return format!("( {} )", alts.join(" | "));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => "string".into(),
        Some("integer") => {
            let unsigned = schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| m >= 0.0);
            if unsigned { "uint" } else { "int" }.into()
        }
        Some("number") => "number".into(),
        Some("boolean") => "( \"true\" | \"false\" )".into(),
        Some("array") if schema["items"]["type"] == "string" => "strings".into(),
        Some("array") => "array".into(),
        _ => "object".into(),
    }
}

/// `"key": value` for one field.
fn pair(key: &str, schema: &Value) -> String {
    format!(
        "{} ws \":\" ws {}",
        literal(&format!("\"{key}\"")),
        value_rule(schema)
    )
}

/// The rules of one call: its line and its arguments object.
fn call_rules(offer: &Offer, call: Call) -> String {
    let schema = offer.schema(call);
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required = offer.required(call);
    let optional = offer.optional(call);
    let name = rule(call);
    let mut out = format!(
        "{name} ::= {} {name}-args\n",
        literal(&format!("[SYS_CALL::{}] ", call.name()))
    );
    let opt_rule = format!("{name}-opt");
    if !optional.is_empty() {
        let alts: Vec<String> = optional.iter().map(|k| pair(k, &props[k])).collect();
        out.push_str(&format!("{opt_rule} ::= {}\n", alts.join(" | ")));
    }
    let body = if required.is_empty() {
        if optional.is_empty() {
            "\"{}\"".to_string()
        } else {
            format!("\"{{\" ws ( {opt_rule} ( \",\" ws {opt_rule} )* )? ws \"}}\"")
        }
    } else {
        let req: Vec<String> = required.iter().map(|k| pair(k, &props[k])).collect();
        let rest = if optional.is_empty() {
            String::new()
        } else {
            format!(" ( \",\" ws {opt_rule} )*")
        };
        format!("\"{{\" ws {}{rest} ws \"}}\"", req.join(" \",\" ws "))
    };
    out.push_str(&format!("{name}-args ::= {body}\n"));
    out
}

/// A llama.cpp GBNF grammar for a reply of 1 to `max_calls` lines
/// `[SYS_CALL::NAME] {...}`, each with the offered fields of its call.
pub fn offer_grammar(offer: &Offer, max_calls: usize) -> String {
    let names: Vec<String> = offer.calls().iter().map(|c| rule(*c)).collect();
    let names = if names.is_empty() {
        "sys-exit".to_string()
    } else {
        names.join(" | ")
    };
    // call ( "\n" call ( "\n" call )? )? ... for max_calls calls at most.
    let mut root = String::from("call");
    let mut tail = String::new();
    for _ in 1..max_calls.max(1) {
        root.push_str(" ( \"\\n\" call");
        tail.push_str(" )?");
    }
    let mut g = format!(
        "# A reply: 1 to {} syscalls, one per line.\nroot ::= {root}{tail}\ncall ::= {names}\n\n",
        max_calls.max(1)
    );
    for c in offer.calls() {
        g.push_str(&call_rules(offer, *c));
    }
    if offer.calls().is_empty() {
        g.push_str("sys-exit ::= \"[SYS_CALL::SYS_EXIT] {}\"\n");
    }
    g.push_str(
        r#"
# JSON values (RFC 8259), kept on one line.
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( string ws ":" ws value ( "," ws string ws ":" ws value )* )? ws "}"
array ::= "[" ws ( value ( "," ws value )* )? ws "]"
strings ::= "[" ws ( string ( "," ws string )* )? ws "]"
string ::= "\"" char* "\""
# Any escaped character: a shell's `\*` is repaired, not forbidden.
char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" hex hex hex hex | [^"\\/bfnrtu\x00-\x1F] )
hex ::= [0-9a-fA-F]
uint ::= "0" | [1-9] [0-9]*
int ::= "-"? uint
number ::= "-"? uint ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws ::= " "?
"#,
    );
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::schema::offer::Facilities;
    use std::collections::BTreeSet;

    fn offer(calls: &[Call]) -> Offer {
        Offer::new(calls, Facilities::default())
    }

    /// Rule names defined and used in a grammar.
    fn rules(g: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut defined = BTreeSet::new();
        let mut used = BTreeSet::new();
        for line in g
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("::="))
        {
            let (name, rest) = line.split_once("::=").unwrap_or_default();
            defined.insert(name.trim().to_string());
            // Drop string literals and character classes, keep identifiers.
            let mut cleaned = String::new();
            let (mut in_str, mut in_class, mut esc) = (false, false, false);
            for c in rest.chars() {
                if esc {
                    esc = false;
                    continue;
                }
                match c {
                    '\\' if in_str || in_class => esc = true,
                    '"' if !in_class => in_str = !in_str,
                    '[' if !in_str => in_class = true,
                    ']' if in_class => in_class = false,
                    c if !in_str && !in_class => cleaned.push(c),
                    _ => {}
                }
            }
            for w in cleaned.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                if !w.is_empty() {
                    used.insert(w.to_string());
                }
            }
        }
        (defined, used)
    }

    #[test]
    fn every_rule_used_is_defined_for_every_call() {
        let all = offer(&Call::ALL);
        for max in [1, 3, 8] {
            let g = offer_grammar(&all, max);
            let (defined, used) = rules(&g);
            let undefined: Vec<&String> = used.difference(&defined).collect();
            assert!(undefined.is_empty(), "undefined {undefined:?} in\n{g}");
            assert_eq!(g.matches("( \"\\n\" call").count(), max - 1, "{g}");
        }
    }

    #[test]
    fn the_grammar_spells_out_each_calls_fields_in_order() {
        let g = offer_grammar(&offer(&[Call::FS_WRITE, Call::EXEC_CMD]), 1);
        assert!(
            g.contains(r#"fs-write ::= "[SYS_CALL::FS_WRITE] " fs-write-args"#),
            "{g}"
        );
        assert!(
            g.contains(r#"fs-write-args ::= "{" ws "\"path\"" ws ":" ws string "," ws "\"content\"" ws ":" ws string ( "," ws fs-write-opt )* ws "}""#),
            "{g}"
        );
        assert!(
            g.contains(r#""\"append\"" ws ":" ws ( "true" | "false" )"#),
            "{g}"
        );
        assert!(g.contains(r#"( "\"utf8\"" | "\"base64\"" )"#), "{g}");
        // No driver without docker; no calls that are not offered.
        assert!(!g.contains("driver"), "{g}");
        assert!(!g.contains("SEND_MSG") && !g.contains("AGENT_INFO"), "{g}");
        assert!(
            g.contains("sys-exit-args ::= \"{\" ws ( sys-exit-opt"),
            "{g}"
        );
        assert!(g.contains("getpid-args ::= \"{}\""), "{g}");
    }

    #[test]
    fn the_reply_schema_bounds_the_calls_and_hides_what_cannot_work() {
        let s = offer_reply_schema(&offer(&[Call::EXEC_CMD, Call::MEM_READ]), 1);
        assert_eq!(s["properties"]["calls"]["maxItems"], 1);
        assert_eq!(s["properties"]["calls"]["minItems"], 1);
        let text = s.to_string();
        assert!(
            !text.contains("driver") && !text.contains("collection"),
            "{text}"
        );
        assert!(!text.contains("AGENT_INFO"), "{text}");
        // Keys in their natural order: the server builds its grammar from it.
        let branches = s["properties"]["calls"]["items"]["anyOf"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let exec = branches
            .iter()
            .find(|b| b["properties"]["name"]["const"] == "EXEC_CMD")
            .map(|b| b["properties"]["arguments"].clone())
            .unwrap_or_default();
        let keys: Vec<&String> = exec["properties"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["cmd", "timeout_s"]);
        let tools = offer_tools(&offer(&[Call::EXEC_CMD]));
        assert_eq!(tools.len(), 3, "EXEC_CMD, GETPID, SYS_EXIT");
        assert!(!tools[0].2.to_string().contains("driver"));
    }
}
