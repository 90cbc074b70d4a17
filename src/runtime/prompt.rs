//! The system instructions the runtime gives its model: who it is, the
//! syscalls it may make with their argument schemas, and how to make them.

use crate::abi::calls::Call;
use crate::abi::schema::{args_schema, describe};

/// Calls the model may make itself (inference is the runtime's job).
pub fn model_calls(permitted: &[String]) -> Vec<Call> {
    permitted
        .iter()
        .filter_map(|n| Call::parse(n))
        .filter(|c| !matches!(c, Call::LLM_INFER | Call::AGENT_INFO))
        .collect()
}

/// The system message.
pub fn system_prompt(name: &str, pid: u64, calls: &[Call], native_tools: bool) -> String {
    let mut s = format!(
        "You are agent {pid} (\"{name}\"), a process of AgentOS. You act only through \
         syscalls; their results come back to you as the next message. Your files live in \
         your private workspace (paths like /notes.md). Nothing else on the machine is \
         reachable.\n\n"
    );
    if native_tools {
        s.push_str("Call the provided tools to act. You may call several in one reply.\n");
    } else {
        s.push_str(
            "To make syscalls, reply with one or more lines of the form\n\
             [SYS_CALL::NAME] {json arguments}\n\
             for example: [SYS_CALL::FS_WRITE] {\"path\": \"/notes.md\", \"content\": \"...\"}\n\
             Calls run in order. Think briefly, then act.\n",
        );
    }
    s.push_str(
        "When your task is done, make [SYS_CALL::SYS_EXIT] {\"code\": 0}.\n\nYour syscalls:\n",
    );
    for c in calls {
        s.push_str(&format!(
            "- {}: {}\n  arguments: {}\n",
            c.name(),
            describe(*c),
            args_schema(*c)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_lists_exactly_the_permitted_calls() {
        let calls = model_calls(&["FS_WRITE".into(), "SYS_EXIT".into(), "LLM_INFER".into()]);
        assert_eq!(calls, vec![Call::FS_WRITE, Call::SYS_EXIT]);
        let p = system_prompt("writer", 4, &calls, false);
        assert!(p.contains("- FS_WRITE:"));
        assert!(p.contains("- SYS_EXIT:"));
        assert!(!p.contains("- SEND_MSG:"));
        assert!(!p.contains("- LLM_INFER:"));
        assert!(p.contains("[SYS_CALL::NAME]"));
    }
}
