//! Worked examples the runtime puts before the task (`worked_example`):
//! short earlier tasks done turn by turn, in the mode's own syntax, with
//! the result of each call coming back and the next call using it. A
//! small model imitates what it sees: shown one call per reply, a result
//! carried into the next call and SYS_EXIT only after the last step, it
//! does the same with its own task.
//!
//! The example uses only calls the agent is offered, and other files and
//! values than any task would (it must show the pattern, not answers).

use super::mode::Mode;
use super::text::inline_json;
use crate::abi::calls::Call;
use crate::abi::schema::offer::Offer;
use crate::llm::{ChatMessage, Role};
use serde_json::{Value, json};

/// One example: its task, and each call with the result it got.
struct Example {
    task: &'static str,
    steps: Vec<(Call, Value, Value)>,
}

/// The examples for what `offer` holds: running a command and keeping
/// its output when EXEC_CMD and FS_WRITE are offered, and fixing a
/// file after reading it when FS_READ and FS_WRITE are. Two different ones show
/// the pattern rather than values to copy.
fn pick(offer: &Offer) -> Vec<Example> {
    let has = |c| offer.contains(c);
    let mut out = Vec::new();
    if has(Call::FS_READ) && has(Call::FS_WRITE) {
        out.push(Example {
            task: "The file /hello.py should print goodbye, but it prints hello. Read it and fix it by writing the corrected script to /hello.py. Then exit.",
            steps: vec![
                (
                    Call::FS_READ,
                    json!({"path": "/hello.py"}),
                    json!({"content": "print(\"hello\")\n", "size": 15, "truncated": false}),
                ),
                (
                    Call::FS_WRITE,
                    json!({"path": "/hello.py", "content": "print(\"goodbye\")\n"}),
                    json!({"bytes_written": 17, "size": 17}),
                ),
            ],
        });
    }
    if has(Call::EXEC_CMD) && has(Call::FS_WRITE) {
        out.push(Example {
            task: "Find the current directory with EXEC_CMD (the shell command `pwd`) and write it into the file /where.txt. Then exit.",
            steps: vec![
                (
                    Call::EXEC_CMD,
                    json!({"cmd": "pwd"}),
                    json!({"stdout": "/workspace\n", "stderr": "", "exit_code": 0}),
                ),
                (
                    Call::FS_WRITE,
                    json!({"path": "/where.txt", "content": "/workspace"}),
                    json!({"bytes_written": 10, "size": 10}),
                ),
            ],
        });
    }
    out
}

/// The example as chat messages (to go between the instructions and the
/// task), in `mode`'s syntax; empty when no example fits the offer or the
/// mode has native tools.
pub fn messages(offer: &Offer, mode: Mode) -> Vec<ChatMessage> {
    if mode == Mode::Tools {
        return Vec::new();
    }
    let syntax = mode.syntax();
    let mut out = Vec::new();
    let mut after = String::new();
    for ex in pick(offer) {
        out.push(ChatMessage::new(
            Role::User,
            format!("{after}Example task: {}", ex.task),
        ));
        for (call, args, result) in &ex.steps {
            out.push(ChatMessage::new(
                Role::Assistant,
                syntax.render(call.name(), args),
            ));
            let outcome = inline_json(&json!({"status": "SUCCESS", "result": result}));
            out.push(ChatMessage::new(
                Role::User,
                format!("[RESULT::{}] {outcome}", call.name()),
            ));
        }
        out.push(ChatMessage::new(
            Role::Assistant,
            syntax.render("SYS_EXIT", &json!({"code": 0})),
        ));
        // The result of the example's SYS_EXIT opens the next message.
        after = "[RESULT::SYS_EXIT] {\"status\": \"SUCCESS\"}\nThat example is finished.\n".into();
    }
    if !out.is_empty() {
        out.push(ChatMessage::new(
            Role::User,
            format!("{after}The examples are finished. Now do your own task the same way, one step at a time."),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::schema::offer::Facilities;

    fn offer(calls: &[Call]) -> Offer {
        Offer::new(calls, Facilities::default())
    }

    #[test]
    fn the_example_uses_only_offered_calls_in_the_modes_syntax() {
        let exec = offer(&[Call::EXEC_CMD, Call::FS_WRITE, Call::FS_READ]);
        let m = messages(&exec, Mode::Grammar);
        assert!(m[1].content.starts_with("[SYS_CALL::FS_READ] "), "{m:?}");
        assert!(m[2].content.starts_with("[RESULT::FS_READ] "), "{m:?}");
        assert!(
            m.iter()
                .any(|x| x.content.starts_with("[SYS_CALL::EXEC_CMD] ")),
            "{m:?}"
        );
        let j = messages(&exec, Mode::JsonSchema);
        assert!(
            j[1].content
                .starts_with("{\"calls\": [{\"name\": \"FS_READ\""),
            "{j:?}"
        );
        assert!(
            m.iter().any(|x| x.content.contains("FS_READ")),
            "both examples: {m:?}"
        );
        let files = messages(&offer(&[Call::FS_READ, Call::FS_WRITE]), Mode::Text);
        assert!(files[1].content.contains("FS_READ"), "{files:?}");
        assert!(files.iter().all(|x| !x.content.contains("EXEC_CMD")));
        assert!(messages(&offer(&[Call::SEND_MSG]), Mode::Text).is_empty());
        assert!(messages(&exec, Mode::Tools).is_empty());
        // Every step's result is a reply of its own: one call per reply.
        let roles: Vec<Role> = messages(&exec, Mode::Text).iter().map(|x| x.role).collect();
        assert_eq!(roles.first(), Some(&Role::User));
        assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
    }
}
