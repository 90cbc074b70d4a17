use super::*;
use std::collections::BTreeSet;

/// The call the runtime makes on the model's behalf; never offered to it.
const INFER: &str = "LLM_INFER";

// ---- a validator for the subset of JSON schema emitted above ----------

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "null" => v.is_null(),
        other => panic!("schema uses unsupported type {other}"),
    }
}

/// Checks `v` against `schema`; the error names the failing path.
fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = schema
        .as_object()
        .ok_or(format!("{at}: schema not an object"))?;
    for key in s.keys() {
        let known = [
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "enum",
            "const",
            "minimum",
            "maximum",
            "minItems",
            "anyOf",
            "description",
        ];
        assert!(known.contains(&key.as_str()), "unsupported keyword {key}");
    }
    if let Some(ty) = s.get("type").and_then(Value::as_str) {
        if !type_ok(ty, v) {
            return Err(format!("{at}: expected {ty}, got {v}"));
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            return Err(format!("{at}: {v} not in {options:?}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{at}: {v} is not {c}"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            return Err(format!("{at}: {n} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if n > max {
            return Err(format!("{at}: {n} > {max}"));
        }
    }
    if let Some(branches) = s.get("anyOf").and_then(Value::as_array) {
        if !branches.iter().any(|b| validate(b, v, at).is_ok()) {
            return Err(format!("{at}: matches no anyOf branch"));
        }
    }
    if let Some(arr) = v.as_array() {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if (arr.len() as u64) < min {
                return Err(format!("{at}: fewer than {min} items"));
            }
        }
        if let Some(items) = s.get("items") {
            for (i, item) in arr.iter().enumerate() {
                validate(items, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap_or_default();
            if !obj.contains_key(req) {
                return Err(format!("{at}: missing required {req}"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, val, &format!("{at}.{k}"))?,
                None if s.get("additionalProperties") == Some(&json!(false)) => {
                    return Err(format!("{at}: unknown field {k}"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn call(name: &str) -> Call {
    Call::parse(name).unwrap_or_else(|| panic!("no call {name}"))
}

fn valid(name: &str, v: Value) -> Result<(), String> {
    validate(&args_schema(call(name)), &v, name)
}

/// Property names of an object schema.
fn props(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Backticked identifiers (`like_this`) of a text.
fn backticked(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

/// The text with parenthesized asides removed (`(\`utf8\`/\`base64\`)`).
fn without_parens(text: &str) -> String {
    let mut depth = 0usize;
    text.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => return depth == 0,
            }
            false
        })
        .collect()
}

const DOC: &str = include_str!("../../../docs/SYSCALLS.md");

// ---- the table ---------------------------------------------------------

#[test]
fn every_call_has_a_specific_schema_and_a_description() {
    for c in Call::ALL {
        let schema = args_schema(c);
        assert!(
            schema.get("properties").is_some_and(Value::is_object),
            "{} has no schema of its own",
            c.name()
        );
        assert!(!describe(c).is_empty(), "{} has no description", c.name());
    }
}

#[test]
fn schemas_use_only_the_subset_and_close_their_objects() {
    fn walk(s: &Value, at: &str) {
        let Some(map) = s.as_object() else {
            panic!("{at}: schema is not an object");
        };
        if map.get("type") == Some(&json!("object")) && map.contains_key("properties") {
            assert_eq!(map.get("additionalProperties"), Some(&json!(false)), "{at}");
            let props = map["properties"].as_object().expect("properties object");
            for req in map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(
                    props.contains_key(req.as_str().expect("string")),
                    "{at}: {req}"
                );
            }
            for (k, sub) in props {
                walk(sub, &format!("{at}.{k}"));
            }
        }
        if let Some(items) = map.get("items") {
            walk(items, &format!("{at}[]"));
        }
        // Exercise the keyword whitelist of the validator.
        let _ = validate(s, &Value::Null, at);
    }
    for c in Call::ALL {
        walk(&args_schema(c), c.name());
    }
}

/// Schema fields missing from docs/SYSCALLS.md (none at the moment).
const UNDOCUMENTED: &[(&str, &str)] = &[];

#[test]
fn schema_fields_match_the_docs_tables() {
    let mut seen = 0;
    for line in DOC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Some(c) = Call::parse(cells[1]) else {
            continue;
        };
        if c.name() == INFER {
            // Its schema is the model-facing subset (no tools/constraint).
            continue;
        }
        seen += 1;
        let documented = backticked(&without_parens(cells[2]));
        let mut schema = props(&args_schema(c));
        // Fields the daemon accepts (see calls.rs) that the docs do not
        // list yet; remove them here once SYSCALLS.md documents them.
        for (call, field) in UNDOCUMENTED {
            if *call == c.name() {
                assert!(
                    !documented.contains(*field),
                    "{call}.{field} is documented now: drop it from UNDOCUMENTED"
                );
                schema.remove(*field);
            }
        }
        assert_eq!(documented, schema, "{}: docs vs schema", c.name());
        // A field documented without `?` is required.
        let required: BTreeSet<String> = args_schema(c)["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for field in &documented {
            let optional = cells[2].contains(&format!("`{field}`?"));
            assert_eq!(
                !optional,
                required.contains(field),
                "{}: `{field}` required-ness differs from the docs",
                c.name()
            );
        }
    }
    assert!(
        seen >= 15,
        "only {seen} call rows found in docs/SYSCALLS.md"
    );
}

#[test]
fn limits_fields_match_the_docs() {
    let start = DOC.find("`limits` fields (").expect("limits paragraph");
    let para = &DOC[start + "`limits` fields (".len()..];
    let para = &para[..para.find(')').expect("closing paren")];
    let schema = args_schema(Call::SPAWN_AGENT);
    assert_eq!(backticked(para), props(&schema["properties"]["limits"]));
}

#[test]
fn fs_schemas_match_the_driver_field_lists() {
    // The FS argument structs are private to the driver; their field
    // lists (`READ_FIELDS`, ...) are read from its source.
    let src = include_str!("../../drivers/fs/args.rs");
    for (list, name) in [
        ("READ_FIELDS", "FS_READ"),
        ("WRITE_FIELDS", "FS_WRITE"),
        ("LIST_FIELDS", "FS_LIST"),
        ("DELETE_FIELDS", "FS_DELETE"),
    ] {
        let start = src
            .find(&format!("const {list}"))
            .unwrap_or_else(|| panic!("{list} not found in drivers/fs/args.rs"));
        let body = &src[start..];
        let body = &body[..body.find("];").expect("end of list")];
        let fields: BTreeSet<String> = body
            .split("(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next().map(str::to_string))
            .collect();
        assert_eq!(fields, props(&args_schema(call(name))), "{name}");
    }
}

#[test]
fn doc_shaped_examples_validate() {
    let ok = [
        ("GETPID", json!({})),
        ("PS", json!({})),
        ("SYS_EXIT", json!({})),
        ("SYS_EXIT", json!({"code": 3, "reason": "gave up"})),
        ("SYS_EXIT", json!({"code": -1})),
        (
            "SPAWN_AGENT",
            json!({"name": "w", "program": "/usr/bin/python3", "args": ["-c", "1"],
                   "permissions": ["fs", "SEND_MSG"], "pipe_to": 1,
                   "limits": {"memory_bytes": 1_000_000, "pids": 8, "cpu_percent": 50,
                              "wall_time_s": 60, "workspace_bytes": 1, "max_file_bytes": 1,
                              "max_read_bytes": 1, "nofile": 64, "syscalls_per_s": 10,
                              "tmp_bytes": 1}}),
        ),
        ("SPAWN_AGENT", json!({"name": "w"})),
        ("WAIT", json!({"pid": 4, "timeout_ms": 100})),
        ("KILL", json!({"pid": 4})),
        ("SLEEP", json!({"ms": 0})),
        ("SEND_MSG", json!({"to": 1, "body": "hi"})),
        ("RECV_MSG", json!({"wait_ms": 0, "max": 100})),
        ("SYS_WRITE_STDOUT", json!({"data": "x"})),
        ("SYS_READ_STDIN", json!({"wait_ms": 5})),
        (
            "FS_READ",
            json!({"path": "/a.txt", "offset": 0, "max_bytes": 10, "encoding": "base64"}),
        ),
        (
            "FS_WRITE",
            json!({"path": "a.txt", "content": "aGk=", "append": true, "encoding": "base64"}),
        ),
        ("FS_LIST", json!({})),
        ("FS_LIST", json!({"path": "/workspace/sub"})),
        ("FS_DELETE", json!({"path": "/d", "recursive": true})),
    ];
    for (name, args) in ok {
        assert_eq!(valid(name, args.clone()), Ok(()), "{name} {args}");
    }
    for c in Call::ALL {
        assert_eq!(
            valid(c.name(), example_args(c)),
            Ok(()),
            "example of {}",
            c.name()
        );
    }
}

#[test]
fn wrong_types_unknown_fields_and_missing_fields_are_rejected() {
    let bad = [
        ("GETPID", json!({"x": 1})),
        ("SYS_EXIT", json!({"code": "0"})),
        ("SYS_EXIT", json!({"code": 1.5})),
        ("SYS_EXIT", json!({"code": 3_000_000_000_u64})),
        ("SPAWN_AGENT", json!({})),
        ("SPAWN_AGENT", json!({"name": "w", "args": "a b"})),
        ("SPAWN_AGENT", json!({"name": "w", "args": [1]})),
        ("SPAWN_AGENT", json!({"name": "w", "limits": {"memory": 1}})),
        ("SPAWN_AGENT", json!({"name": "w", "limits": {"pids": -1}})),
        ("WAIT", json!({"pid": -2})),
        ("WAIT", json!({"timeout_ms": 5})),
        ("KILL", json!({"pid": "3"})),
        ("SLEEP", json!({"ms": 1, "reason": "x"})),
        ("SEND_MSG", json!({"to": 1})),
        ("SEND_MSG", json!({"to": 1, "body": {"text": "hi"}})),
        ("RECV_MSG", json!({"timeout": 5})),
        ("SYS_WRITE_STDOUT", json!({"text": "x"})),
        ("FS_READ", json!({"file": "/a"})),
        ("FS_READ", json!({"path": "/a", "encoding": "latin1"})),
        ("FS_WRITE", json!({"path": "/a"})),
        (
            "FS_WRITE",
            json!({"path": "/a", "content": "x", "append": "yes"}),
        ),
        ("FS_LIST", json!({"path": 3})),
        ("FS_DELETE", json!({"path": "/a", "force": true})),
        ("FS_DELETE", json!([])),
    ];
    for (name, args) in bad {
        assert!(valid(name, args.clone()).is_err(), "{name} {args} accepted");
    }
}

#[test]
fn llm_infer_schema_is_the_documented_shape() {
    let s = args_schema(call(INFER));
    let ok =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "model": "m"});
    assert_eq!(validate(&s, &ok, INFER), Ok(()));
    let bad = json!({"messages": [{"role": "robot", "content": "hi"}]});
    assert!(validate(&s, &bad, INFER).is_err());
    assert!(validate(&s, &json!({"max_tokens": 1}), INFER).is_err());
}

// ---- the deserializers accept what the schemas accept ------------------

/// Deserializes `args` with the argument type the table gives `name`;
/// `None` for calls whose handler reads the arguments object itself.
fn daemon_accepts(name: &str, args: &Value) -> Option<bool> {
    let c = call(name);
    (c.info().args != "ArgsObject").then(|| c.check_args(args).is_ok())
}

#[test]
fn deserializers_agree_with_the_schemas_on_examples() {
    let cases = [
        ("SEND_MSG", json!({"to": 3, "body": "hello"})),
        ("SEND_MSG", json!({"to": 3})),
        ("SEND_MSG", json!({"to": "3", "body": "x"})),
        ("SEND_MSG", json!({"to": 3, "body": "x", "cc": 4})),
        ("SYS_EXIT", json!({})),
        ("SYS_EXIT", json!({"code": "1"})),
        ("SYS_EXIT", json!({"status": 1})),
        ("WAIT", json!({"pid": 2, "timeout_ms": 10})),
        ("WAIT", json!({"pid": -2})),
        ("KILL", json!({"pid": 2})),
        ("KILL", json!({"pid": 2, "signal": 9})),
        ("SLEEP", json!({"ms": 10})),
        ("SLEEP", json!({"ms": 1.5})),
        ("RECV_MSG", json!({"wait_ms": 10, "max": 5})),
        ("RECV_MSG", json!({"max": -1})),
        ("SYS_READ_STDIN", json!({})),
        ("SYS_WRITE_STDOUT", json!({"data": "x"})),
        ("SYS_WRITE_STDOUT", json!({"data": ["x"]})),
        (
            "SPAWN_AGENT",
            json!({"name": "a", "limits": {"pids": 3}, "args": ["x"]}),
        ),
        ("SPAWN_AGENT", json!({"name": "a", "limits": {"pidz": 3}})),
        ("SPAWN_AGENT", json!({"name": "a", "permissions": "fs"})),
    ];
    for (name, args) in cases {
        let schema_ok = valid(name, args.clone()).is_ok();
        assert_eq!(
            daemon_accepts(name, &args),
            Some(schema_ok),
            "{name} {args}: schema says {schema_ok}"
        );
    }
}

use crate::abi::test_rng::Rng;

/// A random instance of `schema` (optional fields included at random).
fn instance(schema: &Value, rng: &mut Rng) -> Value {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return options[rng.below(options.len() as u64) as usize].clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (k, sub) in props {
                    if required.contains(&k.as_str()) || rng.below(2) == 0 {
                        out.insert(k.clone(), instance(sub, rng));
                    }
                }
            }
            Value::Object(out)
        }
        Some("array") => (0..rng.below(3))
            .map(|_| instance(&schema["items"], rng))
            .collect(),
        Some("string") => json!(["", "x", "/a/b.txt", "{\"}", "é\n"][rng.below(5) as usize]),
        Some("boolean") => json!(rng.below(2) == 0),
        Some("integer") => {
            let min = schema
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(-1000);
            let max = schema
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(1 << 40);
            let span = (max - min).clamp(0, 1 << 40) as u64;
            json!(min + rng.below(span + 1) as i64)
        }
        Some("number") => json!(rng.below(200) as f64 / 100.0),
        other => panic!("cannot generate {other:?}"),
    }
}

#[test]
fn deserializers_accept_random_schema_instances() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for c in Call::ALL {
        let schema = args_schema(c);
        for _ in 0..200 {
            let v = instance(&schema, &mut rng);
            assert_eq!(validate(&schema, &v, c.name()), Ok(()), "generator");
            if let Some(ok) = daemon_accepts(c.name(), &v) {
                assert!(ok, "{} rejects schema-valid {v}", c.name());
                checked += 1;
            }
        }
    }
    assert!(checked >= 1600, "{checked}");
}

// ---- tools, reply schema, grammar --------------------------------------

#[test]
fn tool_specs_offer_permitted_and_always_allowed_calls_but_not_llm_infer() {
    let permitted: Vec<Call> = Call::ALL.into_iter().collect();
    let specs = tool_specs(&permitted);
    let names: Vec<&str> = specs.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(!names.contains(&INFER));
    assert_eq!(
        names.len(),
        Call::ALL.iter().filter(|c| model_facing(**c)).count()
    );
    for (name, description, schema) in &specs {
        assert!(!description.is_empty());
        assert_eq!(schema, &args_schema(call(name)));
    }
    let names: Vec<String> = tool_specs(&[Call::FS_READ, Call::FS_READ])
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "FS_READ").count(), 1);
    assert!(names.contains(&"SYS_EXIT".to_string()));
    assert!(names.contains(&"GETPID".to_string()));
    assert!(!names.contains(&"FS_WRITE".to_string()));
}

#[test]
fn reply_schema_accepts_permitted_calls_and_rejects_others() {
    let s = reply_schema(&[Call::FS_WRITE, Call::SEND_MSG]);
    let ok = json!({"calls": [
        {"name": "FS_WRITE", "arguments": {"path": "/a", "content": "x"}},
        {"name": "SYS_EXIT", "arguments": {"code": 0}},
    ]});
    assert_eq!(validate(&s, &ok, "reply"), Ok(()));
    let cases = [
        json!({"calls": []}),
        json!({"calls": [{"name": "FS_READ", "arguments": {"path": "/a"}}]}),
        json!({"calls": [{"name": "FS_WRITE", "arguments": {"path": "/a"}}]}),
        json!({"calls": [{"name": "FS_WRITE", "arguments": {"path": "/a", "content": "x", "z": 1}}]}),
        json!({"calls": [{"name": "SEND_MSG", "arguments": {"path": "/a", "content": "x"}}]}),
        json!({"calls": [{"name": "SYS_EXIT"}]}),
        json!({"calls": [], "note": "x"}),
        json!([]),
    ];
    for bad in cases {
        assert!(validate(&s, &bad, "reply").is_err(), "{bad} accepted");
    }
    let rf = response_format(&[Call::FS_WRITE]);
    assert_eq!(rf["type"], "json_schema");
    assert_eq!(rf["json_schema"]["schema"], reply_schema(&[Call::FS_WRITE]));
}

/// Rule names defined by a grammar, and identifiers its rules use.
fn rules(grammar: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut defined = BTreeSet::new();
    let mut used = BTreeSet::new();
    for line in grammar.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (lhs, rhs) = line.split_once("::=").expect("every line is a rule");
        defined.insert(lhs.trim().to_string());
        // Drop quoted literals and character classes, keep identifiers.
        let mut rest = String::new();
        let mut chars = rhs.chars();
        while let Some(ch) = chars.next() {
            match ch {
                '"' | '[' => {
                    let close = if ch == '"' { '"' } else { ']' };
                    while let Some(c2) = chars.next() {
                        if c2 == '\\' {
                            chars.next();
                        } else if c2 == close {
                            break;
                        }
                    }
                    rest.push(' ');
                }
                _ => rest.push(ch),
            }
        }
        for word in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if !word.is_empty() {
                used.insert(word.to_string());
            }
        }
    }
    (defined, used)
}

#[test]
fn grammar_structure() {
    let permitted = [Call::FS_WRITE, Call::FS_READ];
    let g = gbnf_grammar(&permitted);
    let (defined, used) = rules(&g);
    for rule in [
        "root", "call", "name", "object", "value", "string", "number",
    ] {
        assert!(defined.contains(rule), "rule {rule} missing:\n{g}");
    }
    let undefined: Vec<&String> = used.difference(&defined).collect();
    assert!(undefined.is_empty(), "undefined rules {undefined:?}");
    assert!(g.contains(r#"call ::= "[SYS_CALL::" name "] " object"#));
    let name_rule = g
        .lines()
        .find(|l| l.starts_with("name ::="))
        .expect("name rule");
    for c in offered_calls(&permitted) {
        assert!(
            name_rule.contains(&format!("\"{}\"", c.name())),
            "{}",
            c.name()
        );
    }
    for c in Call::ALL {
        let offered = offered_calls(&permitted).contains(&c);
        assert_eq!(
            g.contains(&format!("\"{}\"", c.name())),
            offered,
            "{} offered={offered}",
            c.name()
        );
    }
    // Balanced quotes on every rule line (escapes aside).
    for line in g.lines().filter(|l| !l.starts_with('#')) {
        let unescaped = line.replace("\\\\", "").replace("\\\"", "");
        let in_class = unescaped.split('[').count() - 1;
        let quotes = unescaped.matches('"').count();
        assert!(quotes % 2 == 0 || in_class > 0, "unbalanced quotes: {line}");
    }
}

#[test]
fn no_args_calls() {
    assert!(takes_no_args(Call::GETPID));
    assert!(takes_no_args(Call::PS));
    assert!(!takes_no_args(Call::SYS_EXIT));
    assert!(!takes_no_args(Call::FS_LIST));
    assert!(!takes_no_args(Call::FS_WRITE));
}
