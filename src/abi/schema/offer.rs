//! What one agent's model is offered: the calls it may make and, per call,
//! only the arguments that can work for it — no `driver` for EXEC_CMD when
//! no container driver is configured, no `collection` for MEM_* without
//! the MEM_SHARED permission. Prompts, tool lists, grammars, reply schemas
//! and the lenient decoding of arguments all read the same [`Offer`], so
//! what the model is shown and what is accepted agree.

use super::{args_schema, example_args, offered_calls};
use crate::abi::calls::Call;
use serde_json::Value;

/// What the agent's configuration makes possible, beyond its calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facilities {
    /// EXEC_CMD may run in a container (a docker image is configured).
    pub docker: bool,
    /// MEM_* may name shared collections (the MEM_SHARED permission).
    pub shared_memory: bool,
}

/// The calls offered to one model, with their model-facing schemas.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    calls: Vec<Call>,
    facilities: Facilities,
}

impl Offer {
    /// The calls offered with `permitted` (see [`offered_calls`]).
    pub fn new(permitted: &[Call], facilities: Facilities) -> Offer {
        Offer {
            calls: offered_calls(permitted),
            facilities,
        }
    }

    /// Offered calls, in table order (SYS_EXIT always among them).
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }

    /// The same offer without `calls` (never without SYS_EXIT): what a
    /// constrained model may write after it repeated them.
    pub fn without(&self, calls: &[Call]) -> Offer {
        Offer {
            calls: self
                .calls
                .iter()
                .copied()
                .filter(|c| !calls.contains(c) || *c == Call::SYS_EXIT)
                .collect(),
            facilities: self.facilities,
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.calls.iter().map(|c| c.name()).collect()
    }

    pub fn contains(&self, call: Call) -> bool {
        self.calls.contains(&call)
    }

    /// The arguments schema of `call` as offered: the table's, without the
    /// options that cannot work for this agent.
    pub fn schema(&self, call: Call) -> Value {
        let mut schema = args_schema(call);
        let hidden: &[&str] = match call {
            Call::EXEC_CMD if !self.facilities.docker => &["driver"],
            Call::MEM_WRITE | Call::MEM_READ if !self.facilities.shared_memory => &["collection"],
            // A model's child is a model too: it needs a role, and a
            // program path would be a guess.
            Call::SPAWN_AGENT => &["program", "args"],
            _ => &[],
        };
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            for h in hidden {
                props.remove(*h);
            }
        }
        if call == Call::SPAWN_AGENT {
            schema["required"] = serde_json::json!(["name", "role"]);
        }
        schema
    }

    /// A short valid arguments object of `call`.
    pub fn example(&self, call: Call) -> Value {
        match call {
            // The table's example names a permission this agent may not
            // have; a model copies it.
            Call::SPAWN_AGENT => serde_json::json!({
                "name": "helper",
                "role": "what the helper must do",
            }),
            _ => example_args(call),
        }
    }

    /// The required fields of `call`, in order.
    pub fn required(&self, call: Call) -> Vec<String> {
        self.schema(call)
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The optional fields of `call`, in the schema's order.
    pub fn optional(&self, call: Call) -> Vec<String> {
        let required = self.required(call);
        self.schema(call)
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.keys()
                    .filter(|k| !required.contains(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
