//! Repetition control: a model that makes the same call with the same
//! result again is told so (a nudge with the call), and the third time
//! the agent is ended with the reason — instead of looping until a turn
//! or token limit.
//!
//! "The same result" ignores what changes on every call by design (a
//! message's `seq`, timestamps, queue times): sending the same message
//! again is a repeat even though its sequence number is new. Calls that
//! waited (SLEEP, and RECV_MSG or SYS_READ_STDIN with `wait_ms`) may come
//! back with nothing a few more times, since waiting for something is
//! progress in time: they end the agent at [`MAX_WAIT_REPEATS`]. GETPID,
//! whose answer never changes by design, is nudged from its second time
//! on (and so left out of a constrained model's offer for a while) but
//! never ends the agent.

use crate::abi::calls::Call;
use serde_json::Value;
use std::collections::HashMap;

/// The same call with the same result this many times ends the agent.
pub const MAX_REPEATS: u32 = 3;
/// The same waiting call with the same result this many times ends it.
pub const MAX_WAIT_REPEATS: u32 = 6;

/// Result fields that differ on every call and do not make it new.
const VOLATILE: [&str; 6] = [
    "seq",
    "ts_ms",
    "queue_ms",
    "budget_remaining",
    "elapsed_ms",
    "started_ms",
];

/// What the guard says about a call that just completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// First time (or not counted).
    New,
    /// Seen before with the same result: nudge the model.
    Again,
    /// Seen too many times: end the agent.
    Stuck,
}

#[derive(Debug, Default)]
pub struct RepeatGuard {
    seen: HashMap<(Call, String, String), u32>,
}

/// Whether a call waits (and so may repeat a little more).
fn waits(call: Call, args: &Value) -> bool {
    let waited = |k: &str| args.get(k).and_then(Value::as_u64).is_some_and(|ms| ms > 0);
    match call {
        Call::SLEEP => true,
        Call::RECV_MSG | Call::SYS_READ_STDIN => waited("wait_ms"),
        _ => false,
    }
}

/// The arguments without empty ones (`{}`, `[]`, `null`, `""`): adding
/// `"metadata": {}` does not make a call new.
fn given(args: &Value) -> Value {
    match args {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(o) => !o.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `v` without its [`VOLATILE`] fields, at any depth.
fn stable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), stable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
        other => other.clone(),
    }
}

impl RepeatGuard {
    /// Records a completed call with its (decoded) arguments and outcome.
    pub fn record(&mut self, call: Call, args: &Value, outcome: &Value) -> Repeat {
        let limit = if waits(call, args) {
            MAX_WAIT_REPEATS
        } else {
            MAX_REPEATS
        };
        let n = self
            .seen
            .entry((call, given(args).to_string(), stable(outcome).to_string()))
            .or_insert(0);
        *n += 1;
        match *n {
            1 => Repeat::New,
            // Its answer never changes by design: nudged (and left out of
            // a constrained offer) but never the end of the agent.
            _ if call == Call::GETPID => Repeat::Again,
            n if n >= limit => Repeat::Stuck,
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
        let out = json!({"stdout": "Linux"});
        assert_eq!(g.record(Call::EXEC_CMD, &args, &out), Repeat::New);
        assert_eq!(g.record(Call::EXEC_CMD, &args, &out), Repeat::Again);
        assert_eq!(g.record(Call::EXEC_CMD, &args, &out), Repeat::Stuck);
    }

    #[test]
    fn a_different_result_or_argument_is_new() {
        let mut g = RepeatGuard::default();
        let args = json!({"cmd": "date"});
        assert_eq!(g.record(Call::EXEC_CMD, &args, &json!(1)), Repeat::New);
        assert_eq!(g.record(Call::EXEC_CMD, &args, &json!(2)), Repeat::New);
        assert_eq!(
            g.record(Call::EXEC_CMD, &json!({"cmd": "ls"}), &json!(1)),
            Repeat::New
        );
    }

    #[test]
    fn empty_arguments_do_not_make_a_call_new() {
        let mut g = RepeatGuard::default();
        let out = json!({"key": "k"});
        let plain = json!({"key": "k", "value": "v"});
        let padded = json!({"key": "k", "value": "v", "metadata": {}, "tags": []});
        assert_eq!(g.record(Call::MEM_WRITE, &plain, &out), Repeat::New);
        assert_eq!(g.record(Call::MEM_WRITE, &padded, &out), Repeat::Again);
    }

    #[test]
    fn a_new_sequence_number_does_not_make_a_send_new() {
        let mut g = RepeatGuard::default();
        let args = json!({"to": 1, "body": "ready"});
        let sent = |seq: u64| json!({"status": "SUCCESS", "result": {"seq": seq}});
        assert_eq!(g.record(Call::SEND_MSG, &args, &sent(1)), Repeat::New);
        assert_eq!(g.record(Call::SEND_MSG, &args, &sent(2)), Repeat::Again);
        assert_eq!(g.record(Call::SEND_MSG, &args, &sent(3)), Repeat::Stuck);
    }

    #[test]
    fn waiting_repeats_longer_and_getpid_is_nudged_but_never_ends_it() {
        let mut g = RepeatGuard::default();
        let wait = json!({"wait_ms": 1000});
        let empty = json!({"messages": []});
        let me = json!({"pid": 7});
        assert_eq!(g.record(Call::GETPID, &json!({}), &me), Repeat::New);
        for _ in 0..10 {
            assert_eq!(g.record(Call::GETPID, &json!({}), &me), Repeat::Again);
        }
        assert_eq!(g.record(Call::RECV_MSG, &wait, &empty), Repeat::New);
        for _ in 2..MAX_WAIT_REPEATS {
            assert_eq!(g.record(Call::RECV_MSG, &wait, &empty), Repeat::Again);
        }
        assert_eq!(g.record(Call::RECV_MSG, &wait, &empty), Repeat::Stuck);
        // Without a wait, the usual limit.
        assert_eq!(g.record(Call::RECV_MSG, &json!({}), &empty), Repeat::New);
        assert_eq!(g.record(Call::RECV_MSG, &json!({}), &empty), Repeat::Again);
        assert_eq!(g.record(Call::RECV_MSG, &json!({}), &empty), Repeat::Stuck);
    }
}
