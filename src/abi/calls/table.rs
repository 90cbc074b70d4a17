//! The syscall table: one entry per call of the ABI, in the order of
//! [`Call::ALL`]. See [`super`] for what each field means and what is
//! derived from it.
//!
//! - `group`: the permission group that grants the call ([`Group`]).
//! - `access`: [`Access::Granted`] (needs a permission), [`Access::Always`]
//!   or [`Access::PermissionOnly`].
//! - `durability`: when the reply may leave ([`Durability`]).
//! - `inline`: answered on the connection task (never blocks, never waits
//!   for the disk).
//! - `offered`: shown to models.
//! - `args`: the type the arguments deserialize into ([`super::args`]).
//! - `description`, `schema`, `example`: what models are told; the schema
//!   is built with [`crate::abi::json_schema`] and must accept exactly what
//!   the handler accepts (the tests check it against `args` and
//!   docs/SYSCALLS.md).

use super::{
    Access, ArgsObject, Durability, ExitArgs, Group, InferArgs, NoArgs, PidArgs, RecvArgs,
    RecvMsgArgs, SendArgs, SleepArgs, SpawnArgs, WaitArgs, WriteStdoutArgs,
};
use crate::abi::json_schema::{
    boolean, count, encoding, limits, object, string, string_map, strings, take_items,
};
use serde_json::json;

syscalls! {
    GETPID {
        group: None,
        access: Access::Always,
        durability: Durability::ReadOnly,
        inline: true,
        offered: true,
        args: NoArgs,
        description: "Return your pid and your parent's pid.",
        schema: || object(&[], &[]),
        example: || json!({}),
    }

    SYS_EXIT {
        group: None,
        access: Access::Always,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ExitArgs,
        description: "End yourself with an exit code (0 = success) and an optional reason.",
        schema: || object(
            &[
                (
                    "code",
                    json!({
                        "type": "integer",
                        "minimum": i32::MIN,
                        "maximum": i32::MAX,
                        "description": "exit code; 0 (default) means success",
                    }),
                ),
                ("reason", string("why the agent ends, for the log")),
            ],
            &[],
        ),
        example: || json!({"code": 0}),
    }

    SPAWN_AGENT {
        group: Some(Group::Process),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: SpawnArgs,
        description: "Start a child agent with a subset of your permissions and limits; returns its pid.",
        schema: || object(
            &[
                ("name", string("name of the child agent")),
                (
                    "program",
                    string("absolute path of the child's program; default: the caller's own"),
                ),
                ("args", strings("command-line arguments of the program")),
                (
                    "permissions",
                    strings("call or group names (a subset of the caller's); absent: none"),
                ),
                ("limits", limits()),
                (
                    "pipe_to",
                    count(
                        "pid (the caller or a descendant) that receives the child's SYS_WRITE_STDOUT output",
                    ),
                ),
                (
                    "role",
                    string(
                        "for an LLM child: its role (system prompt); the child runs the built-in runtime",
                    ),
                ),
                ("model", string("model of an LLM child; default: the caller's")),
                (
                    "priority",
                    json!({"type": "integer", "minimum": 1, "maximum": 100,
                           "description": "scheduling weight, at most the caller's"}),
                ),
            ],
            &["name"],
        ),
        example: || json!({"name": "helper", "permissions": ["fs"]}),
    }

    WAIT {
        group: Some(Group::Process),
        access: Access::Granted,
        durability: Durability::ReadOnly,
        inline: false,
        offered: true,
        args: WaitArgs,
        description: "Wait for a child to end; returns its exit code, signal and reason.",
        schema: || object(
            &[
                ("pid", count("pid of a child")),
                ("timeout_ms", count("give up after this long (ETIMEDOUT)")),
            ],
            &["pid"],
        ),
        example: || json!({"pid": 2}),
    }

    KILL {
        group: Some(Group::Process),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: PidArgs,
        description: "Kill a descendant agent.",
        schema: || object(&[("pid", count("pid of a descendant"))], &["pid"]),
        example: || json!({"pid": 2}),
    }

    PS {
        group: Some(Group::Process),
        access: Access::Granted,
        durability: Durability::ReadOnly,
        inline: true,
        offered: true,
        args: NoArgs,
        description: "List the agents of your subtree (pid, ppid, name, state).",
        schema: || object(&[], &[]),
        example: || json!({}),
    }

    SEND_MSG {
        group: Some(Group::Ipc),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: SendArgs,
        description: "Send a text message to another agent by pid.",
        schema: || object(
            &[
                ("to", count("pid of the recipient")),
                ("body", string("the message (at most 256 KiB)")),
            ],
            &["to", "body"],
        ),
        example: || json!({"to": 1, "body": "done"}),
    }

    RECV_MSG {
        group: Some(Group::Ipc),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: RecvMsgArgs,
        description: "Take messages from your inbox, optionally waiting for one.",
        schema: || take_items(
            "a message",
            &[
                ("keep", boolean("leave the messages in the inbox until acknowledged")),
                ("ack", count("first remove every message with a seq up to this one")),
            ],
        ),
        example: || json!({"wait_ms": 1000}),
    }

    SYS_WRITE_STDOUT {
        group: Some(Group::Ipc),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: WriteStdoutArgs,
        description: "Write text to your output (your pipe_to agent's input, else your log).",
        schema: || object(&[("data", string("text to write"))], &["data"]),
        example: || json!({"data": "hello"}),
    }

    SYS_READ_STDIN {
        group: Some(Group::Ipc),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: RecvArgs,
        description: "Read the text piped to you; eof once nothing more can arrive.",
        schema: || take_items("input", &[]),
        example: || json!({"wait_ms": 1000}),
    }

    SLEEP {
        group: Some(Group::Time),
        access: Access::Granted,
        durability: Durability::ReadOnly,
        inline: false,
        offered: true,
        args: SleepArgs,
        description: "Sleep for a number of milliseconds.",
        schema: || object(&[("ms", count("milliseconds to sleep"))], &["ms"]),
        example: || json!({"ms": 1000}),
    }

    FS_READ {
        group: Some(Group::Fs),
        access: Access::Granted,
        durability: Durability::ReadOnly,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Read a file of your workspace.",
        schema: || object(
            &[
                ("path", string("file path in the workspace, e.g. /notes.md")),
                ("offset", count("byte offset to start at")),
                ("max_bytes", count("most bytes to return")),
                ("encoding", encoding()),
            ],
            &["path"],
        ),
        example: || json!({"path": "/notes.md"}),
    }

    FS_WRITE {
        group: Some(Group::Fs),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Create or overwrite (or append to) a file of your workspace; parents are created.",
        schema: || object(
            &[
                ("path", string("file path in the workspace, e.g. /notes.md")),
                ("content", string("the new content")),
                ("append", boolean("append instead of replacing the file")),
                ("encoding", encoding()),
            ],
            &["path", "content"],
        ),
        example: || json!({"path": "/notes.md", "content": "..."}),
    }

    FS_LIST {
        group: Some(Group::Fs),
        access: Access::Granted,
        durability: Durability::ReadOnly,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "List a directory of your workspace.",
        schema: || object(&[("path", string("directory in the workspace; default /"))], &[]),
        example: || json!({"path": "/"}),
    }

    FS_DELETE {
        group: Some(Group::Fs),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Delete a file or directory of your workspace.",
        schema: || object(
            &[
                ("path", string("file or directory in the workspace")),
                ("recursive", boolean("delete a non-empty directory")),
            ],
            &["path"],
        ),
        example: || json!({"path": "/notes.md"}),
    }

    /// The runtime makes this call on its model's behalf; it is never
    /// offered to the model. Its schema is the model-facing subset of
    /// [`InferArgs`] (no `tools`, no `constraint`).
    LLM_INFER {
        group: Some(Group::Inference),
        access: Access::Granted,
        durability: Durability::OwnFlush,
        inline: false,
        offered: false,
        args: InferArgs,
        description: "Run one inference of a language model.",
        schema: || object(
            &[
                (
                    "messages",
                    json!({
                        "type": "array",
                        "description": "the conversation",
                        "items": object(
                            &[
                                (
                                    "role",
                                    json!({"type": "string",
                                           "enum": ["system", "user", "assistant", "tool"]}),
                                ),
                                ("content", json!({"type": "string"})),
                            ],
                            &["role", "content"],
                        ),
                    }),
                ),
                (
                    "max_tokens",
                    json!({"type": "integer", "minimum": 0, "maximum": u32::MAX,
                           "description": "most tokens to generate"}),
                ),
                ("temperature", json!({"type": "number", "minimum": 0})),
                ("model", string("another configured model; default: the agent's")),
            ],
            &["messages"],
        ),
        example: || json!({"messages": [{"role": "user", "content": "Hello"}]}),
    }

    /// The runtime also reads `{"history": true}` (its journal of turns).
    /// Not offered to models: the runtime reads it for them at start.
    AGENT_INFO {
        group: None,
        access: Access::Always,
        durability: Durability::ReadOnly,
        inline: true,
        offered: false,
        args: ArgsObject,
        description: "Describe yourself: your pid, name, permissions, limits and usage.",
        schema: || object(&[], &[]),
        example: || json!({}),
    }

    EXEC_CMD {
        group: Some(Group::Exec),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Run a shell command in a fresh sandbox (or container) on your workspace.",
        schema: || object(
            &[
                ("cmd", string("shell command, run with sh -c in /workspace")),
                (
                    "timeout_s",
                    count("seconds before the whole process tree is killed (default 30)"),
                ),
                (
                    "driver",
                    json!({
                        "type": "string",
                        "enum": ["sandbox", "docker"],
                        "description": "sandbox (default): a fresh sandbox like yours; docker: a locked-down container",
                    }),
                ),
            ],
            &["cmd"],
        ),
        example: || json!({"cmd": "ls -la"}),
    }

    NET_FETCH {
        group: Some(Group::Net),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Fetch an http(s) URL; private and local addresses are refused.",
        schema: || object(
            &[
                ("url", string("http or https URL")),
                (
                    "method",
                    string("GET (default); others need the NET_WRITE permission"),
                ),
                ("headers", string_map("request headers")),
                ("body", string("request body")),
                ("max_bytes", count("most bytes of the response body to return")),
            ],
            &["url"],
        ),
        example: || json!({"url": "https://example.org/"}),
    }

    MEM_WRITE {
        group: Some(Group::Memory),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Store a text in semantic memory under a key.",
        schema: || object(
            &[
                ("key", string("identifier of the memory")),
                ("value", string("text to remember")),
                ("collection", string("collection name; default: your own")),
                (
                    "metadata",
                    json!({"type": "object", "description": "free-form metadata"}),
                ),
            ],
            &["key", "value"],
        ),
        example: || json!({"key": "fact-1", "value": "..."}),
    }

    MEM_READ {
        group: Some(Group::Memory),
        access: Access::Granted,
        durability: Durability::ReadOnly,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Find the stored texts most similar to a query.",
        schema: || object(
            &[
                ("query", string("what to look for")),
                ("k", count("how many results (default 5)")),
                ("collection", string("collection name; default: your own")),
            ],
            &["query"],
        ),
        example: || json!({"query": "what did I learn about X?"}),
    }

    SYS_SCHEDULE {
        group: Some(Group::Time),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Have a prompt delivered to your inbox after some seconds (durable).",
        schema: || object(
            &[
                ("seconds", count("delay before the timer fires")),
                ("prompt", string("text delivered to your inbox when it fires")),
            ],
            &["seconds", "prompt"],
        ),
        example: || json!({"seconds": 60, "prompt": "check the build"}),
    }

    SYS_REGISTER_WEBHOOK {
        group: Some(Group::Webhooks),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Own an HTTP path; requests to it arrive in your inbox as events.",
        schema: || object(
            &[
                ("path", string("URL path to own, e.g. /hooks/build")),
                ("secret", string("HMAC-SHA256 key callers must sign with")),
            ],
            &["path"],
        ),
        example: || json!({"path": "/hooks/build"}),
    }

    SYS_WEBHOOK_REPLY {
        group: Some(Group::Webhooks),
        access: Access::Granted,
        durability: Durability::GroupCommit,
        inline: false,
        offered: true,
        args: ArgsObject,
        description: "Answer a webhook request that arrived in your inbox.",
        schema: || object(
            &[
                ("request_id", string("the id of the webhook event")),
                ("status", count("HTTP status code")),
                ("body", string("response body")),
                ("headers", string_map("response headers")),
                ("encoding", encoding()),
            ],
            &["request_id", "status", "body"],
        ),
        example: || json!({"request_id": "w-1", "status": 200, "body": "ok"}),
    }

    /// Lets NET_FETCH use methods other than GET and HEAD.
    NET_WRITE {
        group: None,
        access: Access::PermissionOnly,
        durability: Durability::GroupCommit,
        inline: false,
        offered: false,
        args: NoArgs,
        description: "A permission, not a syscall.",
        schema: || object(&[], &[]),
        example: || json!({}),
    }

    /// Lets MEM_WRITE/MEM_READ use the shared collections the profile
    /// names.
    MEM_SHARED {
        group: None,
        access: Access::PermissionOnly,
        durability: Durability::GroupCommit,
        inline: false,
        offered: false,
        args: NoArgs,
        description: "A permission, not a syscall.",
        schema: || object(&[], &[]),
        example: || json!({}),
    }
}
