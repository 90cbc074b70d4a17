//! The system instructions the runtime gives its model: who it is, how to
//! make a call in its mode's syntax, and one example line per offered call
//! with its required arguments in their natural order and the optional
//! ones named — never raw JSON schemas (a small model copies their
//! keywords into its arguments). With native tools the schemas travel in
//! the tools, so the prompt does not repeat them.

use super::mode::Mode;
use crate::abi::calls::Call;
use crate::abi::schema::describe;
use crate::abi::schema::offer::Offer;
use serde_json::{Map, Value};

/// Calls the model may make itself (inference is the runtime's job).
pub fn model_calls(permitted: &[String]) -> Vec<Call> {
    permitted
        .iter()
        .filter_map(|n| Call::parse(n))
        .filter(|c| !matches!(c, Call::LLM_INFER | Call::AGENT_INFO))
        .collect()
}

/// The example arguments of `call` as shown: the required fields of its
/// example (in the schema's order), then any optional ones the example
/// has.
pub fn example_args(offer: &Offer, call: Call) -> Value {
    let example = offer.example(call);
    let Some(obj) = example.as_object() else {
        return example;
    };
    let mut out = Map::new();
    let keys = offer.required(call).into_iter().chain(offer.optional(call));
    for k in keys {
        if let Some(v) = obj.get(&k) {
            out.insert(k, v.clone());
        }
    }
    Value::Object(out)
}

/// One call written as the model should write it.
pub fn example_line(mode: Mode, offer: &Offer, call: Call) -> String {
    let syntax = match mode {
        // In a call list, each call is one element; the list is shown once.
        Mode::JsonSchema => super::text::Syntax::ToolCall,
        m => m.syntax(),
    };
    syntax.render(call.name(), &example_args(offer, call))
}

/// The example of how to finish, in the mode's syntax.
pub fn exit_example(mode: Mode) -> String {
    mode.syntax()
        .render("SYS_EXIT", &serde_json::json!({"code": 0}))
}

/// The call shown as the first example: the first that does something.
fn first_example(offer: &Offer) -> Option<Call> {
    offer
        .calls()
        .iter()
        .copied()
        .find(|c| !c.always_allowed())
        .or_else(|| offer.calls().first().copied())
}

/// The system message.
pub fn system_prompt(name: &str, pid: u64, offer: &Offer, mode: Mode, max_calls: usize) -> String {
    let one = max_calls <= 1;
    let mut s = format!(
        "You are agent {pid} (\"{name}\"), a process of AgentOS. You act only through \
         syscalls; the result of each call comes back to you in the next message. Your \
         files are in your private workspace: write paths like /notes.md.\n\n"
    );
    s.push_str(mode.how_to_call(one));
    if mode != Mode::Tools {
        if let Some(c) = first_example(offer) {
            let example = match mode {
                Mode::JsonSchema => mode.syntax().render(c.name(), &example_args(offer, c)),
                _ => example_line(mode, offer, c),
            };
            s.push_str(&format!(", for example:\n{example}\n"));
        } else {
            s.push_str(".\n");
        }
    } else {
        s.push_str(".\n");
    }
    if one {
        s.push_str("Make one call per reply and wait for its result before the next step.\n");
    } else {
        s.push_str(
            "Calls run in order; the first call that fails stops the reply, and the calls after it are not run.\n",
        );
    }
    s.push_str(&format!(
        "When every step of your task is done, finish with {}. If the task cannot be done, \
         finish with code 1 and the reason.\n",
        exit_example(mode)
    ));
    if mode == Mode::Tools {
        return s;
    }
    s.push_str("\nYour syscalls (required arguments shown; optional ones named):\n");
    // What does the work first; asking who you are and ending last.
    let (always, granted): (Vec<Call>, Vec<Call>) =
        offer.calls().iter().partition(|c| c.always_allowed());
    for c in granted.iter().chain(always.iter().rev()) {
        let optional = offer.optional(*c);
        let shown = example_args(offer, *c);
        let extra: Vec<&String> = optional
            .iter()
            .filter(|k| shown.get(k.as_str()).is_none())
            .collect();
        s.push_str(&example_line(mode, offer, *c));
        s.push_str("\n  ");
        s.push_str(describe(*c));
        if !extra.is_empty() {
            s.push_str(&format!(
                " Optional: {}.",
                extra
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::schema::offer::Facilities;

    fn offer(calls: &[Call]) -> Offer {
        Offer::new(calls, Facilities::default())
    }

    #[test]
    fn the_prompt_lists_exactly_the_permitted_calls() {
        let calls = model_calls(&["FS_WRITE".into(), "SYS_EXIT".into(), "LLM_INFER".into()]);
        assert_eq!(calls, vec![Call::FS_WRITE, Call::SYS_EXIT]);
        let p = system_prompt("writer", 4, &offer(&calls), Mode::Text, 8);
        assert!(
            p.contains("[SYS_CALL::FS_WRITE] {\"path\": \"/notes.md\", \"content\": \"...\"}"),
            "{p}"
        );
        assert!(p.contains("[SYS_CALL::SYS_EXIT] {\"code\": 0}"), "{p}");
        assert!(p.contains("[SYS_CALL::GETPID] {}"), "{p}");
        assert!(!p.contains("SEND_MSG"));
        assert!(!p.contains("LLM_INFER"));
        assert!(!p.contains("AGENT_INFO"));
        assert!(p.contains("[SYS_CALL::NAME]"));
    }

    #[test]
    fn no_schema_keywords_and_natural_order() {
        let all: Vec<Call> = Call::ALL.to_vec();
        for mode in [Mode::Text, Mode::Grammar, Mode::JsonSchema, Mode::Tools] {
            let p = system_prompt("a", 1, &offer(&all), mode, 1);
            for keyword in [
                "additionalProperties",
                "\"properties\"",
                "\"type\"",
                "\"required\"",
            ] {
                assert!(!p.contains(keyword), "{mode:?}: {keyword} in\n{p}");
            }
        }
        let p = system_prompt("a", 1, &offer(&all), Mode::Text, 1);
        assert!(
            p.contains("[SYS_CALL::SEND_MSG] {\"to\": 1, \"body\": \"done\"}"),
            "{p}"
        );
        assert!(p.contains("Optional: append, encoding."), "{p}");
        assert!(p.contains("exactly one line"), "{p}");
    }

    #[test]
    fn each_mode_speaks_its_own_syntax() {
        let calls = [Call::FS_WRITE];
        let p = system_prompt("a", 1, &offer(&calls), Mode::JsonSchema, 1);
        assert!(
            p.contains("{\"calls\": [{\"name\": \"FS_WRITE\", \"arguments\": {\"path\""),
            "{p}"
        );
        assert!(!p.contains("[SYS_CALL::"), "{p}");
        let p = system_prompt("a", 1, &offer(&calls), Mode::Tools, 1);
        assert!(!p.contains("[SYS_CALL::"), "{p}");
        assert!(
            !p.contains("\"path\""),
            "tools mode repeats the schemas:\n{p}"
        );
        assert!(
            p.contains("{\"name\": \"SYS_EXIT\", \"arguments\": {\"code\": 0}}"),
            "{p}"
        );
    }

    #[test]
    fn options_that_cannot_work_are_not_offered() {
        let calls = [Call::EXEC_CMD, Call::MEM_WRITE];
        let p = system_prompt("a", 1, &offer(&calls), Mode::Text, 1);
        assert!(!p.contains("driver"), "{p}");
        assert!(!p.contains("collection"), "{p}");
        let both = Offer::new(
            &calls,
            Facilities {
                docker: true,
                shared_memory: true,
            },
        );
        let p = system_prompt("a", 1, &both, Mode::Text, 1);
        assert!(p.contains("driver") && p.contains("collection"), "{p}");
    }
}
