use super::*;
use serde_json::{Map, json};

fn calls(text: &str) -> Vec<(String, Value)> {
    let r = parse_reply(text);
    assert!(
        r.problems.is_empty(),
        "unexpected problems {:?}",
        r.problems
    );
    r.calls.into_iter().map(|c| (c.name, c.args)).collect()
}

fn one(text: &str) -> (String, Value) {
    let mut all = calls(text);
    assert_eq!(all.len(), 1, "expected one call in {text:?}: {all:?}");
    all.remove(0)
}

// ---- the text form -----------------------------------------------------

#[test]
fn single_text_call() {
    let (name, args) = one(r#"[SYS_CALL::FS_WRITE] {"path": "/a.txt", "content": "hi"}"#);
    assert_eq!(name, "FS_WRITE");
    assert_eq!(args, json!({"path": "/a.txt", "content": "hi"}));
}

#[test]
fn several_text_calls_with_prose_between() {
    let text = "I will write the file first.\n\
        [SYS_CALL::FS_WRITE] {\"path\": \"/a.txt\", \"content\": \"hi\"}\n\
        Then tell my parent.\n\
        [SYS_CALL::SEND_MSG]\n  {\"to\": 1, \"body\": \"done\"}\n\
        [SYS_CALL::SYS_EXIT] {\"code\": 0}\nThat is all.";
    let got = calls(text);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["FS_WRITE", "SEND_MSG", "SYS_EXIT"]);
    assert_eq!(got[1].1, json!({"to": 1, "body": "done"}));
    assert_eq!(got[2].1, json!({"code": 0}));
}

#[test]
fn braces_brackets_and_markers_inside_strings_are_content() {
    let text = r#"[SYS_CALL::FS_WRITE] {"path": "/x.rs", "content": "fn f() { let a = [1, 2]; } } ] { [SYS_CALL::KILL] {\"pid\": 1}"} trailing"#;
    let (name, args) = one(text);
    assert_eq!(name, "FS_WRITE");
    assert_eq!(
        args["content"],
        r#"fn f() { let a = [1, 2]; } } ] { [SYS_CALL::KILL] {"pid": 1}"#
    );
}

#[test]
fn escaped_quotes_and_backslashes() {
    let text = r#"[SYS_CALL::FS_WRITE] {"path": "/q", "content": "say \"hi\" \\ \\\" }"}"#;
    let (_, args) = one(text);
    assert_eq!(args["content"], r#"say "hi" \ \" }"#);
}

#[test]
fn raw_newlines_and_tabs_inside_strings_are_repaired() {
    let text = "[SYS_CALL::FS_WRITE] {\"path\": \"/p.py\", \"content\": \"def f():\n\treturn {1: 2}\n\"}\n[SYS_CALL::GETPID]";
    let got = calls(text);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1["content"], "def f():\n\treturn {1: 2}\n");
    assert_eq!(got[1], ("GETPID".to_string(), json!({})));
}

#[test]
fn repair_fixes_invalid_escapes_and_trailing_commas() {
    let text = r#"[SYS_CALL::FS_WRITE] {"path": "C:\dir", "content": "it\'s",}"#;
    let (_, args) = one(text);
    assert_eq!(args, json!({"path": "C:\\dir", "content": "it's"}));
}

#[test]
fn nested_objects_and_arrays() {
    let text = r#"[SYS_CALL::SPAWN_AGENT] {"name": "w", "args": ["-c", "print({})"], "limits": {"pids": 4, "memory_bytes": 1000}, "permissions": ["fs"]}"#;
    let (name, args) = one(text);
    assert_eq!(name, "SPAWN_AGENT");
    assert_eq!(args["limits"], json!({"pids": 4, "memory_bytes": 1000}));
    assert_eq!(args["args"], json!(["-c", "print({})"]));
}

#[test]
fn lowercase_and_mixed_case_names() {
    for text in [
        r#"[sys_call::fs_write] {"path": "/a", "content": ""}"#,
        r#"[SYS_CALL::fs_write] {"path": "/a", "content": ""}"#,
        r#"[Sys_Call::Fs_Write] {"path": "/a", "content": ""}"#,
        r#"[SYS_CALL::fsWrite] {"path": "/a", "content": ""}"#,
        r#"[ SYS_CALL :: FS_WRITE ] {"path": "/a", "content": ""}"#,
        r#"[SYS_CALL:FS_WRITE] {"path": "/a", "content": ""}"#,
    ] {
        assert_eq!(one(text).0, "FS_WRITE", "{text}");
    }
    assert_eq!(one("[SYS_CALL::GetPid]").0, "GETPID");
}

#[test]
fn object_in_backticks_fence_or_parentheses() {
    let fenced = "[SYS_CALL::FS_READ]\n```json\n{\"path\": \"/a\"}\n```\nok";
    assert_eq!(one(fenced), ("FS_READ".to_string(), json!({"path": "/a"})));
    let ticked = "`[SYS_CALL::FS_READ] {\"path\": \"/b\"}`";
    assert_eq!(one(ticked).1, json!({"path": "/b"}));
    let inline = "[SYS_CALL::FS_READ] `{\"path\": \"/c\"}` then";
    assert_eq!(one(inline).1, json!({"path": "/c"}));
    let paren = "[SYS_CALL::FS_READ]({\"path\": \"/d\"})";
    assert_eq!(one(paren).1, json!({"path": "/d"}));
}

#[test]
fn no_args_calls_may_omit_the_object_but_others_may_not() {
    assert_eq!(
        calls("[SYS_CALL::GETPID]\n[SYS_CALL::PS]"),
        [
            ("GETPID".to_string(), json!({})),
            ("PS".to_string(), json!({}))
        ]
    );
    let r = parse_reply("When I am done I will call [SYS_CALL::SYS_EXIT].");
    assert!(r.calls.is_empty());
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].contains("[SYS_CALL::SYS_EXIT] must be followed by a JSON object"));
    assert!(
        r.problems[0].contains(r#"{"code": 0}"#),
        "{}",
        r.problems[0]
    );
}

#[test]
fn trailing_prose_after_the_object_is_ignored() {
    let (_, args) = one("[SYS_CALL::SLEEP] {\"ms\": 5} and then I will think about {braces} more.");
    assert_eq!(args, json!({"ms": 5}));
}

#[test]
fn invalid_json_after_a_marker_is_a_corrective_problem() {
    let r = parse_reply(r#"[SYS_CALL::FS_WRITE] {"path": "/a", content: "x"}"#);
    assert!(r.calls.is_empty());
    assert_eq!(r.problems.len(), 1);
    let p = &r.problems[0];
    assert!(
        p.starts_with("invalid JSON after [SYS_CALL::FS_WRITE]"),
        "{p}"
    );
    assert!(
        p.contains(r#"expected e.g. [SYS_CALL::FS_WRITE] {"path": "/notes.md", "content": "..."}"#),
        "{p}"
    );
}

#[test]
fn an_unclosed_object_is_a_problem_and_later_calls_still_count() {
    let text = "[SYS_CALL::FS_WRITE] {\"path\": \"/a\", \"content\": \"x\"\n[SYS_CALL::GETPID]";
    let r = parse_reply(text);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("never closed"));
    assert_eq!(r.calls.len(), 1);
    assert_eq!(r.calls[0].name, "GETPID");
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let r = parse_reply(r#"[SYS_CALL::FS_COPY] {"from": "/a", "to": "/b"}"#);
    assert!(r.calls.is_empty());
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].starts_with("unknown syscall FS_COPY; use one of: "));
    for c in Call::ALL {
        assert!(r.problems[0].contains(c.name()), "{} missing", c.name());
    }
    // The object of an unknown call is not re-read as anything else.
    let r = parse_reply(r#"[SYS_CALL::NOPE] {"name": "fs_write", "arguments": {}}"#);
    assert_eq!((r.calls.len(), r.problems.len()), (0, 1));
}

#[test]
fn known_restricts_names_and_reports_unpermitted_calls() {
    let known = ["FS_READ", "SYS_EXIT"];
    let r = parse_reply_with(
        "[SYS_CALL::fs_read] {\"path\": \"/a\"}\n[SYS_CALL::FS_DELETE] {\"path\": \"/a\"}\n[SYS_CALL::RM] {}",
        &known,
    );
    assert_eq!(r.calls.len(), 1);
    assert_eq!(r.calls[0].name, "FS_READ");
    assert_eq!(
        r.problems,
        [
            "syscall FS_DELETE is not permitted to you; use one of: FS_READ, SYS_EXIT",
            "unknown syscall RM; use one of: FS_READ, SYS_EXIT"
        ]
    );
}

#[test]
fn arguments_that_are_not_objects_are_problems() {
    let r = parse_reply("[SYS_CALL::SLEEP] [1000]");
    assert!(r.calls.is_empty());
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("must be followed by a JSON object"));
    let r = parse_reply(r#"{"name": "sleep", "arguments": 1000}"#);
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].contains("arguments of SLEEP must be a JSON object"));
    let r = parse_reply(r#"{"name": "sleep", "arguments": "[1000]"}"#);
    assert!(r.problems[0].contains("arguments of SLEEP must be a JSON object"));
    let r = parse_reply(r#"{"name": "sleep", "arguments": "{ms: 5}"}"#);
    assert!(r.problems[0].contains("arguments string of SLEEP is not valid JSON"));
}

#[test]
fn malformed_markers_are_problems() {
    let r = parse_reply(r#"[SYS_CALL::FS WRITE] {"path": "/a"}"#);
    assert!(r.calls.is_empty());
    assert!(
        r.problems.iter().any(|p| p.starts_with("malformed marker")),
        "{:?}",
        r.problems
    );
}

// ---- JSON tool calls ---------------------------------------------------

#[test]
fn plain_json_tool_call_shapes() {
    let want = (
        "FS_WRITE".to_string(),
        json!({"path": "/a", "content": "x"}),
    );
    for text in [
        r#"{"name": "fs_write", "arguments": {"path": "/a", "content": "x"}}"#,
        r#"{"name": "FS_WRITE", "arguments": "{\"path\": \"/a\", \"content\": \"x\"}"}"#,
        r#"{"tool": "fs_write", "args": {"path": "/a", "content": "x"}}"#,
        r#"{"tool": "fs_write", "parameters": {"path": "/a", "content": "x"}}"#,
        r#"{"tool": "fs_write", "input": {"path": "/a", "content": "x"}}"#,
        r#"{"type": "tool_use", "id": "t1", "name": "fs_write", "input": {"path": "/a", "content": "x"}}"#,
        r#"{"function": {"name": "fs_write", "arguments": "{\"path\":\"/a\",\"content\":\"x\"}"}}"#,
        r#"{"id": "call_1", "type": "function", "function": {"name": "fs_write", "arguments": {"path": "/a", "content": "x"}}}"#,
        r#"{"functionCall": {"name": "fsWrite", "args": {"path": "/a", "content": "x"}}}"#,
        r#"{"call": "FS_WRITE", "args": {"path": "/a", "content": "x"}}"#,
        r#"{"id": 7, "call": "FS_WRITE", "args": {"path": "/a", "content": "x"}}"#,
        r#"Sure! {"name": "fs_write", "arguments": {"path": "/a", "content": "x"}} Done."#,
    ] {
        assert_eq!(one(text), want, "{text}");
    }
}

#[test]
fn name_without_arguments_is_a_call_only_when_the_name_is_a_syscall() {
    assert_eq!(
        one(r#"{"name": "getpid"}"#),
        ("GETPID".to_string(), json!({}))
    );
    let r = parse_reply(r#"The config is {"name": "Alice"}."#);
    assert_eq!(r, ParsedReply::default());
}

#[test]
fn arrays_of_calls_and_call_lists() {
    let text = r#"[{"name": "fs_read", "arguments": {"path": "/a"}}, {"name": "getpid", "arguments": {}}]"#;
    let names: Vec<String> = calls(text).into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["FS_READ", "GETPID"]);
    let text = r#"{"tool_calls": [{"id": "1", "type": "function", "function": {"name": "ps", "arguments": "{}"}}]}"#;
    assert_eq!(one(text), ("PS".to_string(), json!({})));
}

#[test]
fn the_constrained_reply_shape() {
    let text = r#"{"calls": [{"name": "FS_WRITE", "arguments": {"path": "/a", "content": "{\"k\": [1]}"}}, {"name": "SYS_EXIT", "arguments": {"code": 0}}]}"#;
    let got = calls(text);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1["content"], r#"{"k": [1]}"#);
    assert_eq!(got[1], ("SYS_EXIT".to_string(), json!({"code": 0})));
    assert_eq!(parse_reply(r#"{"calls": []}"#), ParsedReply::default());
}

#[test]
fn code_fences_around_json_and_text_calls() {
    let text = "Here:\n```json\n{\"name\": \"fs_list\", \"arguments\": {\"path\": \"/\"}}\n```\n```\n[SYS_CALL::GETPID]\n```";
    let got = calls(text);
    assert_eq!(
        got,
        [
            ("FS_LIST".to_string(), json!({"path": "/"})),
            ("GETPID".to_string(), json!({}))
        ]
    );
}

#[test]
fn tool_call_tags() {
    let text = "<tool_call>\n{\"name\": \"fs_read\", \"arguments\": {\"path\": \"/a\"}}\n</tool_call>\n<tool_call>[SYS_CALL::PS]</tool_call>";
    let got = calls(text);
    assert_eq!(
        got,
        [
            ("FS_READ".to_string(), json!({"path": "/a"})),
            ("PS".to_string(), json!({}))
        ]
    );
    // Fenced inside the tags, and an unterminated last block.
    let text = "<TOOL_CALL>```json\n{\"name\": \"kill\", \"arguments\": {\"pid\": 3}}\n```</TOOL_CALL><tool_call>{\"name\": \"getpid\"}";
    let got = calls(text);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], ("KILL".to_string(), json!({"pid": 3})));
}

#[test]
fn tool_call_tags_are_strict() {
    let r =
        parse_reply("<tool_call>{\"name\": \"fs_read\", \"arguments\": {\"path\": }}</tool_call>");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].starts_with("invalid JSON in a <tool_call> block"));
    let r = parse_reply("<tool_call>{\"path\": \"/a\"}</tool_call>");
    assert!(r.problems[0].contains("is not a call"), "{:?}", r.problems);
    let r = parse_reply("<tool_call>I will read the file.</tool_call>");
    assert!(r.problems[0].contains("held no call"), "{:?}", r.problems);
}

#[test]
fn thinking_is_not_executed() {
    let text = "<think>Maybe [SYS_CALL::KILL] {\"pid\": 1} or {\"name\": \"ps\"}?</think>\n[SYS_CALL::GETPID]";
    assert_eq!(calls(text), [("GETPID".to_string(), json!({}))]);
    assert_eq!(parse_reply("<think>[SYS_CALL::PS]"), ParsedReply::default());
}

#[test]
fn non_call_json_in_prose_is_ignored() {
    let text = r#"The file holds {"version": 2, "items": [{"name": "a", "size": 3}]} and the
    schema is {"type": "object", "name": "fs_write", "properties": {}}; an array
    [{"a": 1}, {"b": 2}] and a set {1, 2} and a link [docs](http://x) and {"name": "x", "version": "1.0"}
    and a tool description {"function": {"name": "ps", "arguments": {}}, "description": "lists"}."#;
    assert_eq!(parse_reply(text), ParsedReply::default());
}

#[test]
fn quoted_file_content_with_a_marker_in_a_string_is_not_a_call() {
    let text = r#"The log says {"line": "[SYS_CALL::KILL] {\"pid\": 1}"} which is old."#;
    assert_eq!(parse_reply(text), ParsedReply::default());
}

#[test]
fn a_broken_json_tool_call_is_reported_once() {
    let r = parse_reply(r#"{"name": "fs_write", "arguments": {"path": "/a", "content": "x"}"#);
    assert!(r.calls.is_empty());
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].starts_with("a JSON tool call is invalid"));
}

#[test]
fn order_is_preserved_across_forms() {
    let text = "first {\"name\": \"fs_read\", \"arguments\": {\"path\": \"/1\"}}\n\
        [SYS_CALL::FS_READ] {\"path\": \"/2\"}\n\
        <tool_call>{\"name\": \"fs_read\", \"arguments\": {\"path\": \"/3\"}}</tool_call>\n\
        ```json\n[{\"name\": \"fs_read\", \"arguments\": {\"path\": \"/4\"}}]\n```\n\
        [SYS_CALL::FS_READ] {\"path\": \"/5\"}";
    let paths: Vec<Value> = calls(text)
        .into_iter()
        .map(|(_, a)| a["path"].clone())
        .collect();
    assert_eq!(
        paths,
        [
            json!("/1"),
            json!("/2"),
            json!("/3"),
            json!("/4"),
            json!("/5")
        ]
    );
}

#[test]
fn no_double_counting() {
    // Tool-call JSON as the content of a text call.
    let inner = r#"{"name": "kill", "arguments": {"pid": 1}}"#;
    let text = format!(
        "[SYS_CALL::FS_WRITE] {}",
        json!({"path": "/t.json", "content": inner})
    );
    assert_eq!(one(&text).0, "FS_WRITE");
    // A text call inside a tool_call block.
    assert_eq!(calls("<tool_call>[SYS_CALL::PS] {}</tool_call>").len(), 1);
    // A call list is one set of calls, not also its elements.
    let text = r#"{"calls": [{"name": "PS", "arguments": {}}]}"#;
    assert_eq!(calls(text).len(), 1);
}

#[test]
fn pathological_input_terminates() {
    let text = "{\"".repeat(20_000) + &"[".repeat(5_000) + "[SYS_CALL::GETPID]";
    let r = parse_reply(&text);
    assert_eq!(r.calls.len(), 1);
    let text = "[SYS_CALL::".repeat(5_000);
    assert!(parse_reply(&text).calls.is_empty());
    // Unclosed objects after many markers: bounded work, then one notice.
    let text = "[SYS_CALL::FS_READ] {\"path\": [\n".repeat(20_000);
    let started = std::time::Instant::now();
    let r = parse_reply(&text);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(r.calls.is_empty());
    assert!(r.problems.len() < 100, "{}", r.problems.len());
    assert!(r.problems.last().is_some_and(|p| p.contains("not read")));
}

// ---- rendering and corrective messages ---------------------------------

#[test]
fn render_call_is_the_canonical_form() {
    assert_eq!(
        render_call("fs_write", &json!({"path": "/a.txt", "content": "hi\n"})),
        r#"[SYS_CALL::FS_WRITE] {"path": "/a.txt", "content": "hi\n"}"#
    );
    assert_eq!(render_call("GETPID", &json!({})), "[SYS_CALL::GETPID] {}");
}

#[test]
fn corrective_message_wording() {
    let m = corrective_message(
        &["unknown syscall X; use one of: FS_WRITE".to_string()],
        &["FS_WRITE", "SYS_EXIT"],
    );
    assert_eq!(
        m,
        "Your last reply could not be executed: unknown syscall X; use one of: FS_WRITE. \
         Reply with one or more lines of the form [SYS_CALL::NAME] {json arguments}, e.g. \
         [SYS_CALL::FS_WRITE] {\"path\": \"/notes.md\", \"content\": \"...\"}. \
         Available calls: FS_WRITE, SYS_EXIT. \
         To finish, use [SYS_CALL::SYS_EXIT] {\"code\": 0}."
    );
    let m = corrective_message(&[], &["SEND_MSG", "SYS_EXIT"]);
    assert!(m.starts_with("Your last reply contained no syscall"));
    assert!(
        m.contains(r#"e.g. [SYS_CALL::SEND_MSG] {"to": 1, "body": "done"}."#),
        "{m}"
    );
    let many: Vec<String> = (0..8).map(|i| format!("problem {i}")).collect();
    let m = corrective_message(&many, &[]);
    assert!(m.contains("problem 4.") && !m.contains("problem 5"), "{m}");
    assert!(m.contains("(3 more problems.)"));
}

/// Every example line the corrective messages show parses back.
#[test]
fn corrective_examples_parse() {
    let names: Vec<&str> = Call::ALL.iter().map(|c| c.name()).collect();
    for c in Call::ALL {
        let line = example_for(&[c.name(), "SYS_EXIT"]);
        let r = parse_reply_with(&line, &names);
        assert!(r.problems.is_empty(), "{line}: {:?}", r.problems);
        assert_eq!(r.calls.len(), 1, "{line}");
    }
    let r = parse_reply(FS_WRITE_EXAMPLE);
    assert_eq!(r.calls.len(), 1);
    assert_eq!(parse_reply(EXIT_EXAMPLE).calls[0].args, json!({"code": 0}));
}

// ---- round trip on generated arguments ---------------------------------

use crate::abi::test_rng::Rng;

const PIECES: &[&str] = &[
    "a",
    "path",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "\n",
    "\t",
    "\r",
    "\u{1}",
    "é",
    "🦀",
    "```",
    "`",
    "<tool_call>",
    "</tool_call>",
    "[SYS_CALL::KILL]",
    "[SYS_CALL::FS_WRITE] {",
    "{\"name\": \"kill\", \"arguments\": {\"pid\": 1}}",
    "\\n",
    "\\\"",
    ",",
    ":",
    " ",
    "null",
];

fn random_string(rng: &mut Rng) -> String {
    (0..rng.below(6))
        .map(|_| PIECES[rng.below(PIECES.len() as u64) as usize])
        .collect()
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth >= 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!((rng.below(1_000_000) as f64) / 8.0),
        4 => json!(random_string(rng)),
        5 => (0..rng.below(4))
            .map(|_| random_value(rng, depth + 1))
            .collect(),
        _ => Value::Object(random_object(rng, depth + 1)),
    }
}

fn random_object(rng: &mut Rng, depth: u32) -> Map<String, Value> {
    (0..rng.below(5))
        .map(|_| (random_string(rng), random_value(rng, depth)))
        .collect()
}

#[test]
fn render_then_parse_round_trips() {
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    for round in 0..2000 {
        let call = Call::ALL[rng.below(Call::ALL.len() as u64) as usize];
        let args = Value::Object(random_object(&mut rng, 0));
        let line = render_call(call.name(), &args);
        let r = parse_reply(&line);
        assert!(
            r.problems.is_empty(),
            "round {round}: {line}: {:?}",
            r.problems
        );
        assert_eq!(
            r.calls,
            [ParsedCall {
                name: call.name().to_string(),
                args: args.clone()
            }],
            "round {round}: {line}"
        );
        // Several rendered calls with prose between them parse in order.
        let second = Value::Object(random_object(&mut rng, 0));
        let text = format!(
            "Thinking {{about it}}.\n{line}\nand then\n{}\n",
            render_call("fs_read", &second)
        );
        let r = parse_reply(&text);
        assert!(
            r.problems.is_empty(),
            "round {round}: {text}: {:?}",
            r.problems
        );
        assert_eq!(r.calls.len(), 2, "round {round}: {text}");
        assert_eq!(r.calls[1].args, second);
    }
}

#[test]
fn canonical_names() {
    assert_eq!(canonical_name("fsWrite"), "FS_WRITE");
    assert_eq!(canonical_name("fs-write"), "FS_WRITE");
    assert_eq!(canonical_name("functions.fs_write"), "FS_WRITE");
    assert_eq!(canonical_name("SYS_WRITE_STDOUT"), "SYS_WRITE_STDOUT");
    assert_eq!(canonical_name("sysWriteStdout"), "SYS_WRITE_STDOUT");
}

// ---- near-misses of the text form (issue 12) ---------------------------

#[test]
fn bracketed_names_without_the_marker_word_are_calls() {
    assert_eq!(
        one(r#"[SYS_EXIT] {"code":0}"#),
        ("SYS_EXIT".to_string(), json!({"code": 0}))
    );
    assert_eq!(
        one(r#"[MEM_WRITE] {"key": "capital", "value": "Paris"}"#),
        (
            "MEM_WRITE".to_string(),
            json!({"key": "capital", "value": "Paris"})
        )
    );
    // The last name counts: a model gluing two calls together.
    assert_eq!(
        one(r#"[EXEC_CMD::SYS_EXIT] {"code": 0}"#),
        ("SYS_EXIT".to_string(), json!({"code": 0}))
    );
    assert_eq!(one("[GETPID]").0, "GETPID");
}

#[test]
fn bare_names_followed_by_their_object_are_calls() {
    assert_eq!(
        one(r#"FS_WRITE {"path": "/a", "content": "x"}"#),
        (
            "FS_WRITE".to_string(),
            json!({"path": "/a", "content": "x"})
        )
    );
    assert_eq!(
        one("I will run it.\nEXEC_CMD: {\"cmd\": \"ls\"}"),
        ("EXEC_CMD".to_string(), json!({"cmd": "ls"}))
    );
    assert_eq!(one(r#"SLEEP({"ms": 5})"#).1, json!({"ms": 5}));
    // Prose that only names a call, or a word that is not one, is not.
    assert_eq!(
        parse_reply("I will use FS_WRITE to save it."),
        ParsedReply::default()
    );
    assert_eq!(
        parse_reply(r#"CONFIG {"a": 1} and fs_write {"path": "/a"}"#),
        ParsedReply::default()
    );
    assert_eq!(
        parse_reply(r#"MY_FS_WRITE {"path": "/a"}"#),
        ParsedReply::default()
    );
}

#[test]
fn echoed_results_and_other_brackets_are_not_calls() {
    assert_eq!(
        parse_reply(r#"[RESULT::FS_READ] {"status": "SUCCESS", "result": {}}"#),
        ParsedReply::default()
    );
    assert_eq!(
        parse_reply(r#"See [1] and [note] {"a": 1} and [x::y] {"b": 2}."#),
        ParsedReply::default()
    );
}

#[test]
fn near_misses_of_calls_not_permitted_are_reported() {
    let r = parse_reply_with(r#"[FS_DELETE] {"path": "/a"}"#, &["FS_READ", "SYS_EXIT"]);
    assert!(r.calls.is_empty());
    assert_eq!(
        r.problems,
        ["syscall FS_DELETE is not permitted to you; use one of: FS_READ, SYS_EXIT"]
    );
}

#[test]
fn the_first_problem_is_located_among_the_calls() {
    let r = parse_reply(
        "[SYS_CALL::GETPID]\n[SYS_CALL::FS_READ] {\"path\": \n[SYS_CALL::SYS_EXIT] {\"code\": 0}",
    );
    assert_eq!(r.calls.len(), 2);
    assert_eq!(r.first_problem_at, Some(1));
    assert_eq!(parse_reply("[SYS_CALL::GETPID]").first_problem_at, None);
}

#[test]
fn examples_in_problems_follow_the_syntax() {
    let r = parse_reply_as(
        r#"[SYS_CALL::FS_WRITE] {"path": "/a", content: "x"}"#,
        &["FS_WRITE"],
        Syntax::CallList,
    );
    assert!(
        r.problems[0].contains(r#"{"calls": [{"name": "FS_WRITE", "arguments": {"path": "/notes.md", "content": "..."}}]}"#),
        "{:?}",
        r.problems
    );
    assert_eq!(
        Syntax::ToolCall.render("fs_read", &json!({"path": "/a"})),
        r#"{"name": "FS_READ", "arguments": {"path": "/a"}}"#
    );
}
