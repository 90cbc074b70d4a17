//! The runtime's turn semantics without a daemon: replies (including the
//! near-misses quoted in issue 12) become calls, arguments are decoded
//! leniently, a reply stops at its first failure, loops end the agent.

#![allow(clippy::unwrap_used)]

use super::reply::{Agent, MAX_INVALID_REPLIES};
use super::*;
use crate::abi::schema::offer::Facilities;

fn agent(calls: &[Call], mode: Mode, max_calls: usize) -> Agent {
    let offer = Offer::new(calls, Facilities::default());
    let ctx = Context::new(
        prompt::system_prompt("t", 1, &offer, mode, max_calls),
        "task".into(),
        4.0,
    );
    Agent::new(ctx, offer, mode, max_calls)
}

fn reply(text: &str) -> Value {
    json!({"content": text, "tool_calls": [], "finish_reason": "stop"})
}

/// Runs one reply; returns (calls made with their arguments, exited, the
/// text the model is told next).
fn turn(
    a: &mut Agent,
    text: &str,
    answer: &mut dyn FnMut(Call, &Value) -> Result<Value, SysError>,
) -> (Vec<(Call, Value)>, Result<bool, Fatal>, String) {
    let mut made = Vec::new();
    let planned = match a.take_reply(&reply(text)) {
        Ok(p) => p,
        Err(f) => return (made, Err(f), String::new()),
    };
    let outcome = run_calls(a, planned, &mut |c, args| {
        made.push((c, args.clone()));
        answer(c, args)
    });
    a.close_turn();
    let told = a
        .ctx
        .messages()
        .last()
        .map(|m| m.content.clone())
        .unwrap_or_default();
    (made, outcome, told)
}

fn ok(_: Call, _: &Value) -> Result<Value, SysError> {
    Ok(json!({}))
}

const FS: &[Call] = &[
    Call::FS_WRITE,
    Call::FS_READ,
    Call::EXEC_CMD,
    Call::WAIT,
    Call::SPAWN_AGENT,
    Call::SEND_MSG,
    Call::MEM_WRITE,
];

#[test]
fn unknown_fields_are_dropped_and_named() {
    let mut a = agent(FS, Mode::Text, 8);
    let (made, out, told) = turn(
        &mut a,
        r#"FS_WRITE {"path": "/a.txt", "content": "hi", "max_bytes": 16}"#,
        &mut ok,
    );
    assert_eq!(out, Ok(false));
    assert_eq!(
        made,
        [(Call::FS_WRITE, json!({"path": "/a.txt", "content": "hi"}))]
    );
    assert!(told.contains(r#""ignored": ["max_bytes"]"#), "{told}");
}

#[test]
fn type_slips_are_coerced_and_synonyms_renamed() {
    let mut a = agent(FS, Mode::Text, 8);
    let (made, _, told) = turn(
        &mut a,
        r#"[SYS_CALL::SEND_MSG] {"to": "3", "message": 42}"#,
        &mut ok,
    );
    assert_eq!(made, [(Call::SEND_MSG, json!({"to": 3, "body": "42"}))]);
    assert!(told.contains(r#""renamed": {"message": "body"}"#), "{told}");
}

#[test]
fn a_guessed_value_is_einval_with_a_corrected_line_and_exit_is_not_run() {
    // The model writes its whole plan with a placeholder pid.
    let mut a = agent(FS, Mode::Text, 8);
    let (made, out, told) = turn(
        &mut a,
        "[SYS_CALL::WAIT] {\"pid\": \"child_pid\"}\n[SYS_CALL::SYS_EXIT] {\"code\": 0}",
        &mut ok,
    );
    assert!(made.is_empty(), "nothing may run: {made:?}");
    assert_eq!(out, Ok(false), "a SYS_EXIT after a failure must not run");
    assert!(told.contains("EINVAL"), "{told}");
    assert!(
        told.contains(r#"`pid` must be a whole number, not \"child_pid\""#),
        "{told}"
    );
    assert!(
        told.contains(r#"Write it like this: [SYS_CALL::WAIT] {"pid": 2}"#),
        "{told}"
    );
    assert!(told.contains("Not run: SYS_EXIT"), "{told}");
}

#[test]
fn a_reply_stops_at_its_first_failed_call() {
    let mut a = agent(FS, Mode::Text, 8);
    let (made, out, told) = turn(
        &mut a,
        "[SYS_CALL::FS_READ] {\"path\": \"/missing\"}\n[SYS_CALL::FS_WRITE] {\"path\": \"/b\", \"content\": \"x\"}\n[SYS_CALL::SYS_EXIT] {\"code\": 0}",
        &mut |c, _| match c {
            Call::FS_READ => Err(SysError::new(Errno::ENOENT, "no such file")),
            _ => Ok(json!({})),
        },
    );
    assert_eq!(made.len(), 1);
    assert_eq!(out, Ok(false));
    assert!(told.contains("ENOENT"), "{told}");
    assert!(
        told.contains("Not run: FS_WRITE, SYS_EXIT (it came after FS_READ, which failed)"),
        "{told}"
    );
}

#[test]
fn a_successful_exit_ends_the_turn() {
    let mut a = agent(FS, Mode::Text, 8);
    let (made, out, _) = turn(
        &mut a,
        "[SYS_CALL::FS_WRITE] {\"path\": \"/b\", \"content\": \"x\"}\n[SYS_EXIT] {\"code\": 0}",
        &mut ok,
    );
    assert_eq!(made.len(), 2);
    assert_eq!(made[1], (Call::SYS_EXIT, json!({"code": 0})));
    assert_eq!(out, Ok(true));
}

#[test]
fn a_problem_in_the_middle_stops_the_reply_there() {
    let mut a = agent(FS, Mode::Text, 8);
    let (made, out, told) = turn(
        &mut a,
        "[SYS_CALL::FS_WRITE] {\"path\": \"/b\", \"content\": \"x\"}\n[SYS_CALL::FS_READ] {\"path\": \n[SYS_CALL::SYS_EXIT] {\"code\": 0}",
        &mut ok,
    );
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(out, Ok(false));
    assert!(told.contains("could not be executed"), "{told}");
    assert!(told.contains("Not run: SYS_EXIT"), "{told}");
}

#[test]
fn one_call_per_reply() {
    let mut a = agent(FS, Mode::Grammar, 1);
    let (made, out, told) = turn(
        &mut a,
        "[SYS_CALL::FS_WRITE] {\"path\": \"/b\", \"content\": \"x\"}\n[SYS_CALL::SYS_EXIT] {\"code\": 0}",
        &mut ok,
    );
    assert_eq!(made.len(), 1);
    assert_eq!(out, Ok(false));
    assert!(
        told.contains("Not run: SYS_EXIT (only 1 call per reply is run)"),
        "{told}"
    );
}

#[test]
fn the_same_call_with_the_same_result_nudges_then_ends_the_agent() {
    let mut a = agent(FS, Mode::Text, 8);
    let line = r#"[SYS_CALL::EXEC_CMD] {"cmd": "uname -s"}"#;
    let mut linux = |_: Call, _: &Value| Ok(json!({"stdout": "Linux\n", "exit_code": 0}));
    let (_, out, told) = turn(&mut a, line, &mut linux);
    assert_eq!(out, Ok(false));
    assert!(!told.contains("already"), "{told}");
    let (_, out, told) = turn(&mut a, line, &mut linux);
    assert_eq!(out, Ok(false));
    assert!(
        told.contains("You already made this call and got this result"),
        "{told}"
    );
    let (_, out, _) = turn(&mut a, line, &mut linux);
    let (code, reason) = out.unwrap_err();
    assert_eq!(code, exit::REPEATED);
    assert!(reason.contains("uname -s"), "{reason}");
}

#[test]
fn invalid_replies_end_the_agent_with_their_exit_code() {
    let mut a = agent(FS, Mode::Text, 8);
    for i in 1..MAX_INVALID_REPLIES {
        let (_, out, told) = turn(&mut a, "I am not sure.", &mut ok);
        assert_eq!(out, Ok(false), "reply {i}");
        assert!(told.contains("contained no syscall"), "{told}");
    }
    let (_, out, _) = turn(&mut a, "Still not sure.", &mut ok);
    assert_eq!(out.unwrap_err().0, exit::INVALID_REPLIES);
}

#[test]
fn corrective_messages_are_in_the_modes_syntax() {
    let mut a = agent(&[Call::FS_WRITE], Mode::JsonSchema, 1);
    let (_, _, told) = turn(&mut a, "{\"calls\": [", &mut ok);
    assert!(
        told.contains(r#"{"calls": [{"name": "FS_WRITE", "arguments": {"path": "/notes.md", "content": "..."}}]}"#),
        "{told}"
    );
    assert!(!told.contains("[SYS_CALL::"), "{told}");
    let mut a = agent(&[Call::FS_WRITE], Mode::Tools, 8);
    let (_, _, told) = turn(&mut a, "ok", &mut ok);
    assert!(
        told.contains(
            r#"{"name": "FS_WRITE", "arguments": {"path": "/notes.md", "content": "..."}}"#
        ),
        "{told}"
    );
    assert!(!told.contains("[SYS_CALL::"), "{told}");
}

#[test]
fn native_calls_not_run_get_their_own_answer() {
    let mut a = agent(FS, Mode::Tools, 8);
    let r = json!({"content": "", "finish_reason": "tool_calls", "tool_calls": [
        {"id": "c1", "name": "fs_read", "arguments": {"path": "/x"}},
        {"id": "c2", "name": "SYS_EXIT", "arguments": {"code": 0}},
    ]});
    let planned = a.take_reply(&r).unwrap();
    let out = run_calls(&mut a, planned, &mut |_, _| {
        Err(SysError::new(Errno::ENOENT, "none"))
    });
    assert_eq!(out, Ok(false));
    let m = a.ctx.messages();
    let tool_answers: Vec<_> = m
        .iter()
        .filter(|m| m.role == crate::llm::Role::Tool)
        .collect();
    assert_eq!(tool_answers.len(), 2);
    assert_eq!(tool_answers[1].tool_call_id.as_deref(), Some("c2"));
    assert!(tool_answers[1].content.contains("NOT_RUN"));
}

#[test]
fn calls_not_offered_are_refused_before_reaching_the_daemon() {
    let mut a = agent(&[Call::FS_READ], Mode::Text, 8);
    let r = json!({"content": "", "finish_reason": "tool_calls", "tool_calls": [
        {"id": "c1", "name": "AGENT_INFO", "arguments": {}},
    ]});
    let planned = a.take_reply(&r).unwrap();
    let mut made = 0;
    let out = run_calls(&mut a, planned, &mut |_, _| {
        made += 1;
        Ok(json!({}))
    });
    assert_eq!(out, Ok(false));
    assert_eq!(made, 0);
}

/// An agent whose exits are checked against `task` (`confirm_exit`).
fn checked(task: &str, max_calls: usize) -> Agent {
    agent(FS, Mode::Text, max_calls).with_coaching(reply::Coaching {
        task: task.into(),
        confirm_exit: true,
        remind_task: false,
    })
}

#[test]
fn an_exit_is_held_while_the_task_names_an_unused_path() {
    // Held twice, naming the path; the third time the agent ends as
    // unfinished.
    let mut a = checked("Write /a.txt. Then exit.", 8);
    for _ in 0..2 {
        let (made, out, told) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 0}", &mut ok);
        assert!(made.is_empty());
        assert_eq!(out, Ok(false));
        assert!(told.contains("your task names /a.txt"), "{told}");
    }
    let (_, out, _) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 0}", &mut ok);
    assert!(
        matches!(out, Err((exit::UNFINISHED, ref why)) if why.contains("/a.txt")),
        "{out:?}"
    );

    // Once a call used the path, the exit goes through.
    let mut a = checked("Write /a.txt. Then exit.", 8);
    let write = "[SYS_CALL::FS_WRITE] {\"path\": \"/a.txt\", \"content\": \"x\"}";
    let _ = turn(&mut a, write, &mut ok);
    let (made, out, _) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 0}", &mut ok);
    assert_eq!(made.len(), 1);
    assert_eq!(out, Ok(true));
    // A failed call does not count as using it.
    let mut a = checked("Write /a.txt.", 8);
    let _ = turn(&mut a, write, &mut |_, _| Err(SysError::io("disk")));
    let (made, _, _) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 0}", &mut ok);
    assert!(made.is_empty());
    // A call the task names must have succeeded.
    let mut a = checked("Run `date` with EXEC_CMD.", 8);
    let (made, _, told) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 0}", &mut ok);
    assert!(made.is_empty());
    assert!(told.contains("your task names EXEC_CMD"), "{told}");
    let _ = turn(&mut a, "[SYS_CALL::EXEC_CMD] {\"cmd\": \"date\"}", &mut ok);
    let (_, out, _) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 0}", &mut ok);
    assert_eq!(out, Ok(true));
    // A failure exit is never held.
    let mut a = checked("Write /a.txt.", 8);
    let (_, out, _) = turn(&mut a, "[SYS_CALL::SYS_EXIT] {\"code\": 1}", &mut ok);
    assert_eq!(out, Ok(true));
}

#[test]
fn an_exit_is_held_while_a_named_file_is_left_as_it_was_read() {
    let mut a = checked("Fix the bug in /calc.py. Then exit.", 1);
    let buggy = "print(2 - 3)\n";
    let mut files = |c: Call, _: &Value| match c {
        Call::FS_READ => Ok(json!({"content": buggy, "truncated": false, "encoding": "utf8"})),
        _ => Ok(json!({})),
    };
    let _ = turn(
        &mut a,
        "[SYS_CALL::FS_READ] {\"path\": \"/calc.py\"}",
        &mut files,
    );
    let back = "[SYS_CALL::FS_WRITE] {\"path\": \"/calc.py\", \"content\": \"print(2 - 3)\\n\"}";
    let (_, _, told) = turn(&mut a, back, &mut files);
    assert!(told.contains("changed nothing"), "{told}");
    // Running the script names it: the runtime reads it again before it
    // judges the exit (once), and finds the text it was given first.
    let run = "[SYS_CALL::EXEC_CMD] {\"cmd\": \"python3 calc.py\"}";
    let _ = turn(&mut a, run, &mut files);
    let exit = "[SYS_CALL::SYS_EXIT] {\"code\": 0}";
    for i in 0..2 {
        let (made, out, told) = turn(&mut a, exit, &mut files);
        let made: Vec<Call> = made.iter().map(|m| m.0).collect();
        assert_eq!(made, if i == 0 { vec![Call::FS_READ] } else { vec![] });
        assert_eq!(out, Ok(false));
        assert!(
            told.contains("you wrote /calc.py, but it still holds"),
            "{told}"
        );
    }
    let (_, out, _) = turn(&mut a, exit, &mut files);
    assert!(
        matches!(out, Err((exit::UNFINISHED, ref why)) if why.contains("left /calc.py unchanged")),
        "{out:?}"
    );
}

#[test]
fn an_exit_is_held_while_a_value_the_task_spells_out_was_not_written() {
    let mut a = checked("Create /s.txt with the content mode=default. Then exit.", 1);
    let short = "[SYS_CALL::FS_WRITE] {\"path\": \"/s.txt\", \"content\": \"default\"}";
    let _ = turn(&mut a, short, &mut ok);
    let exit = "[SYS_CALL::SYS_EXIT] {\"code\": 0}";
    let (made, out, told) = turn(&mut a, exit, &mut ok);
    assert!(made.is_empty());
    assert_eq!(out, Ok(false));
    assert!(told.contains("the exact text \"mode=default\""), "{told}");
    let full = "[SYS_CALL::FS_WRITE] {\"path\": \"/s.txt\", \"content\": \"mode=default\"}";
    let _ = turn(&mut a, full, &mut ok);
    let (made, out, _) = turn(&mut a, exit, &mut ok);
    assert_eq!(made.len(), 1);
    assert_eq!(out, Ok(true));
}

#[test]
fn remind_task_lists_what_was_done() {
    let mut a = agent(FS, Mode::Text, 8).with_coaching(reply::Coaching {
        task: "Write /a.txt.".into(),
        confirm_exit: false,
        remind_task: true,
    });
    let (_, _, told) = turn(
        &mut a,
        "[SYS_CALL::FS_WRITE] {\"path\": \"/a.txt\", \"content\": \"x\"}",
        &mut ok,
    );
    assert!(told.contains("Done so far:\nFS_WRITE"), "{told}");
    assert!(
        told.contains("Your task: Write /a.txt.\nMake the call"),
        "{told}"
    );
}

#[test]
fn a_repeated_call_is_left_out_until_two_others_got_new_results() {
    let mut a = agent(FS, Mode::Grammar, 1);
    let read = "[SYS_CALL::FS_READ] {\"path\": \"/a\"}";
    let _ = turn(&mut a, read, &mut ok);
    assert!(a.avoided().is_empty());
    let _ = turn(&mut a, read, &mut ok);
    assert_eq!(a.avoided(), [Call::FS_READ]);
    let mut n = 0;
    let mut fresh = |_: Call, _: &Value| {
        n += 1;
        Ok(json!({"n": n}))
    };
    let cmd = "[SYS_CALL::EXEC_CMD] {\"cmd\": \"date\"}";
    let _ = turn(&mut a, cmd, &mut fresh);
    assert_eq!(a.avoided(), [Call::FS_READ], "one new result is not enough");
    let _ = turn(&mut a, cmd, &mut fresh);
    assert!(a.avoided().is_empty());
    let narrowed = a.offer.without(&[Call::FS_READ, Call::SYS_EXIT]);
    assert!(!narrowed.contains(Call::FS_READ));
    assert!(
        narrowed.contains(Call::SYS_EXIT),
        "SYS_EXIT is always offered"
    );
}
