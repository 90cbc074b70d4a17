//! Repetition control: a model that makes the same call with the same
//! result again is told so (a nudge with the call), and the third time
//! the agent is ended with the reason — instead of looping until a turn
//! or token limit.
//!
//! Not counted: calls that waited (SLEEP, RECV_MSG and SYS_READ_STDIN with
//! `wait_ms`), since waiting for something is progress in time, and calls
//! without arguments that only ask who the agent is (GETPID): their answer
//! never changes by design.

use crate::abi::calls::Call;
use serde_json::Value;
use std::collections::HashMap;

/// The same call with the same result this many times ends the agent.
pub const MAX_REPEATS: u32 = 3;

/// What the guard says about a call that just completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// First time (or not counted).
    New,
    /// Seen before with the same result: nudge the model.
    Again,
    /// Seen [`MAX_REPEATS`] times: end the agent.
    Stuck,
}

#[derive(Debug, Default)]
pub struct RepeatGuard {
    seen: HashMap<(Call, String, String), u32>,
}

/// Whether a call is exempt from repetition control.
fn exempt(call: Call, args: &Value) -> bool {
    let waits = |k: &str| args.get(k).and_then(Value::as_u64).is_some_and(|ms| ms > 0);
    match call {
        Call::SLEEP => true,
        Call::RECV_MSG | Call::SYS_READ_STDIN => waits("wait_ms"),
        Call::GETPID => true,
        _ => false,
    }
}

impl RepeatGuard {
    /// Records a completed call with its (decoded) arguments and outcome.
    pub fn record(&mut self, call: Call, args: &Value, outcome: &str) -> Repeat {
        if exempt(call, args) {
            return Repeat::New;
        }
        let n = self
            .seen
            .entry((call, args.to_string(), outcome.to_string()))
            .or_insert(0);
        *n += 1;
        match *n {
            1 => Repeat::New,
            n if n >= MAX_REPEATS => Repeat::Stuck,
            _ => Repeat::Again,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_call_and_result_nudges_then_ends() {
        let mut g = RepeatGuard::default();
        let args = json!({"cmd": "uname -s"});
        assert_eq!(g.record(Call::EXEC_CMD, &args, "Linux"), Repeat::New);
        assert_eq!(g.record(Call::EXEC_CMD, &args, "Linux"), Repeat::Again);
        assert_eq!(g.record(Call::EXEC_CMD, &args, "Linux"), Repeat::Stuck);
    }

    #[test]
    fn a_different_result_or_argument_is_new() {
        let mut g = RepeatGuard::default();
        let args = json!({"cmd": "date"});
        assert_eq!(g.record(Call::EXEC_CMD, &args, "1"), Repeat::New);
        assert_eq!(g.record(Call::EXEC_CMD, &args, "2"), Repeat::New);
        assert_eq!(
            g.record(Call::EXEC_CMD, &json!({"cmd": "ls"}), "1"),
            Repeat::New
        );
    }

    #[test]
    fn waiting_and_getpid_are_not_counted() {
        let mut g = RepeatGuard::default();
        for _ in 0..5 {
            assert_eq!(g.record(Call::GETPID, &json!({}), "{}"), Repeat::New);
            assert_eq!(
                g.record(Call::RECV_MSG, &json!({"wait_ms": 1000}), "[]"),
                Repeat::New
            );
            assert_eq!(g.record(Call::SLEEP, &json!({"ms": 5}), "{}"), Repeat::New);
        }
        assert_eq!(g.record(Call::RECV_MSG, &json!({}), "[]"), Repeat::New);
        assert_eq!(g.record(Call::RECV_MSG, &json!({}), "[]"), Repeat::Again);
    }
}
