//! The four ways the runtime asks its model for calls, and everything that
//! differs between them: the constraint sent with each inference, the
//! native tools, and the syntax the prompt and every corrective message
//! are written in (a constrained model can only follow advice in its own
//! syntax).
//!
//! | mode        | model config             | the model writes                          |
//! |-------------|--------------------------|-------------------------------------------|
//! | text        | (default)                | `[SYS_CALL::NAME] {json}` lines           |
//! | grammar     | `constrain = "grammar"`  | the same, forced by a GBNF grammar        |
//! | json_schema | `constrain = "json_schema"` | `{"calls": [{"name", "arguments"}]}`   |
//! | tools       | `tool_calls = true`      | native tool calls (or their JSON in text) |

use super::text::Syntax;
use crate::abi::schema::constraint::{offer_grammar, offer_reply_schema, offer_tools};
use crate::abi::schema::offer::Offer;
use crate::llm::config::{ConstrainMode, ModelConfig};
use crate::llm::{Constraint, ToolSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Text,
    Grammar,
    JsonSchema,
    Tools,
}

impl Mode {
    pub fn of(model: &ModelConfig) -> Mode {
        match (model.tool_calls, model.constrain) {
            (true, _) => Mode::Tools,
            (false, Some(ConstrainMode::Grammar)) => Mode::Grammar,
            (false, Some(ConstrainMode::JsonSchema)) => Mode::JsonSchema,
            (false, None) => Mode::Text,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Text => "text",
            Mode::Grammar => "grammar",
            Mode::JsonSchema => "json_schema",
            Mode::Tools => "tool_calls",
        }
    }

    /// The syntax calls are shown in.
    pub fn syntax(self) -> Syntax {
        match self {
            Mode::Text | Mode::Grammar => Syntax::Text,
            Mode::JsonSchema => Syntax::CallList,
            Mode::Tools => Syntax::ToolCall,
        }
    }

    /// The constraint sent with every inference. With tools there is none
    /// (llama-server refuses a grammar next to tools).
    pub fn constraint(self, offer: &Offer, max_calls: usize) -> Option<Constraint> {
        match self {
            Mode::Grammar => Some(Constraint::Grammar(offer_grammar(offer, max_calls))),
            Mode::JsonSchema => Some(Constraint::JsonSchema(offer_reply_schema(offer, max_calls))),
            Mode::Text | Mode::Tools => None,
        }
    }

    /// The native tools sent with every inference (tools mode only).
    pub fn tools(self, offer: &Offer) -> Vec<ToolSpec> {
        if self != Mode::Tools {
            return Vec::new();
        }
        offer_tools(offer)
            .into_iter()
            .map(|(name, description, parameters)| ToolSpec {
                name,
                description,
                parameters,
            })
            .collect()
    }

    /// How to make a call, in one sentence of this mode's syntax.
    pub fn how_to_call(self, one_per_reply: bool) -> &'static str {
        match (self, one_per_reply) {
            (Mode::Text | Mode::Grammar, true) => {
                "Reply with exactly one line [SYS_CALL::NAME] {json arguments}"
            }
            (Mode::Text | Mode::Grammar, false) => {
                "Reply with one or more lines of the form [SYS_CALL::NAME] {json arguments}"
            }
            (Mode::JsonSchema, true) => {
                "Reply with {\"calls\": [{\"name\": NAME, \"arguments\": {...}}]} holding one call"
            }
            (Mode::JsonSchema, false) => {
                "Reply with {\"calls\": [{\"name\": NAME, \"arguments\": {...}}, ...]}"
            }
            (Mode::Tools, true) => "Call exactly one of the functions",
            (Mode::Tools, false) => "Call one or more of the functions",
        }
    }
}
