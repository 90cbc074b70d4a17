//! The conversation the runtime keeps for its model, and its compaction:
//! the system instructions and the task stay; when the estimate exceeds the
//! model's window, the oldest turns are replaced by one notice that
//! summarises what was done, so a long-running agent never fails with a
//! context-length error.

use crate::llm::{ChatMessage, Role};

/// Estimated per-message overhead of chat formats, in tokens.
const MESSAGE_OVERHEAD: u64 = 4;
/// How many executed calls the compaction summary lists.
const SUMMARY_CALLS: usize = 40;

/// One exchange: the model's reply and the results it led to. Turns are
/// dropped whole, so a tool call is never separated from its result.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone)]
pub struct Context {
    /// System instructions and the task: never dropped.
    head: Vec<ChatMessage>,
    turns: Vec<Turn>,
    /// A one-line record per executed syscall, for summaries.
    done: Vec<String>,
    /// Turns dropped so far.
    dropped: usize,
    chars_per_token: f64,
}

impl Context {
    pub fn new(system: String, task: String, chars_per_token: f64) -> Self {
        Context {
            head: vec![
                ChatMessage::new(Role::System, system),
                ChatMessage::new(Role::User, task),
            ],
            turns: Vec::new(),
            done: Vec::new(),
            dropped: 0,
            chars_per_token,
        }
    }

    /// Puts `messages` (a worked example) between the instructions and the
    /// task; they stay, like both.
    pub fn with_example(mut self, messages: Vec<ChatMessage>) -> Self {
        let task = self.head.split_off(1);
        self.head.extend(messages);
        self.head.extend(task);
        self
    }

    pub fn push_turn(&mut self, turn: Turn) {
        self.turns.push(turn);
    }

    /// Appends a message to the current (last) turn.
    pub fn push(&mut self, m: ChatMessage) {
        match self.turns.last_mut() {
            Some(t) => t.messages.push(m),
            None => self.turns.push(Turn { messages: vec![m] }),
        }
    }

    pub fn record(&mut self, line: String) {
        self.done.push(line);
    }

    /// The last `n` executed calls, one line each (oldest first).
    pub fn done_lines(&self, n: usize) -> &[String] {
        &self.done[self.done.len().saturating_sub(n)..]
    }

    pub fn dropped_turns(&self) -> usize {
        self.dropped
    }

    fn estimate(&self, m: &ChatMessage) -> u64 {
        let chars = m.content.len()
            + m.tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.to_string().len())
                .sum::<usize>();
        (chars as f64 / self.chars_per_token).ceil() as u64 + MESSAGE_OVERHEAD
    }

    /// Estimated tokens of the whole conversation as it would be sent.
    pub fn tokens(&self) -> u64 {
        self.messages().iter().map(|m| self.estimate(m)).sum()
    }

    /// Drops the oldest turns until the conversation fits in `budget`
    /// tokens (the last turn is always kept). Returns how many were dropped.
    pub fn compact(&mut self, budget: u64) -> usize {
        let mut n = 0;
        while self.tokens() > budget && self.turns.len() > 1 {
            self.turns.remove(0);
            self.dropped += 1;
            n += 1;
        }
        n
    }

    /// The messages to send: head, a compaction notice when turns were
    /// dropped, then the kept turns.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let mut out = self.head.clone();
        if self.dropped > 0 {
            let skip = self.done.len().saturating_sub(SUMMARY_CALLS);
            let summary: Vec<&str> = self.done[skip..].iter().map(String::as_str).collect();
            out.push(ChatMessage::new(
                Role::User,
                format!(
                    "[Context compacted: {} earlier turns were removed to fit the context window. \
                     Syscalls you made so far (most recent last):\n{}]",
                    self.dropped,
                    summary.join("\n")
                ),
            ));
        }
        out.extend(self.turns.iter().flat_map(|t| t.messages.iter().cloned()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(text: &str) -> Turn {
        Turn {
            messages: vec![
                ChatMessage::new(Role::Assistant, text),
                ChatMessage::new(Role::User, format!("result of {text}")),
            ],
        }
    }

    #[test]
    fn compaction_keeps_head_and_newest_turn_and_summarises() {
        let mut c = Context::new("system".into(), "task".into(), 1.0);
        for i in 0..50 {
            c.push_turn(turn(&format!("{i:0>40}")));
            c.record(format!("call {i}"));
        }
        let before = c.tokens();
        let dropped = c.compact(400);
        assert!(dropped > 0);
        assert!(
            c.tokens() <= 400 || c.turns.len() == 1,
            "{} tokens",
            c.tokens()
        );
        assert!(c.tokens() < before);
        let m = c.messages();
        assert_eq!(m[0].content, "system");
        assert_eq!(m[1].content, "task");
        assert!(m[2].content.contains("Context compacted"));
        assert!(m[2].content.contains("call 49"));
        assert!(
            m.last()
                .map(|x| x.content.contains("result of 000"))
                .unwrap_or(false)
        );
    }

    #[test]
    fn nothing_is_dropped_when_it_fits() {
        let mut c = Context::new("s".into(), "t".into(), 4.0);
        c.push_turn(turn("a"));
        assert_eq!(c.compact(10_000), 0);
        assert_eq!(c.messages().len(), 4);
    }
}
