//! The syscalls of the ABI: the [`Call`] enum and what the ABI knows about
//! each call ([`SyscallInfo`]), both generated from the syscall table in
//! `table.rs`; the permission groups; and the expansion of a permission
//! list.
//!
//! The table has one entry per call, keyed by its wire name. An entry says
//! which permission group the call belongs to, whether it needs a
//! permission at all, when its reply may leave (the durability rule of
//! `kernel::dispatch`), whether the connection task answers it inline, its
//! argument type, and what models are told about it (a description, a JSON
//! schema of its arguments, an example). Everything else — `Call::ALL`,
//! names, [`Group`] membership, the model-facing schemas of
//! [`crate::abi::schema`] — is derived from it.
//!
//! Adding a syscall: one entry in `table.rs`, its argument type in
//! `args.rs`, and its handler in the kernel.

mod args;
#[cfg(test)]
mod tests;

pub use args::*;

use serde_json::Value;
use std::collections::BTreeSet;

/// What an agent needs to make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every agent may make it whatever its permission list says: asking
    /// who it is and ending itself grant nothing.
    Always,
    /// Its name, its group or `*` must be in the agent's permissions.
    Granted,
    /// A permission, not a call: granting it changes what another call may
    /// do; calling it answers ENOSYS.
    PermissionOnly,
}

/// When a call's reply may leave, relative to the store's group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The call only reads state: its journal entry rides the agent's next
    /// group commit and the reply does not wait for the disk.
    ReadOnly,
    /// The call changes state: it is acknowledged once the group commit
    /// holding the change and its journal entry is durable.
    GroupCommit,
    /// Like [`Durability::GroupCommit`], but the reply waits for a flush of
    /// its own, never for a group of other writers to fill (LLM_INFER,
    /// whose latency matters more than batching).
    OwnFlush,
}

/// Permission groups accepted wherever a permission list is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Process,
    Ipc,
    Time,
    Exec,
    Net,
    Memory,
    Webhooks,
    Inference,
    Fs,
}

impl Group {
    pub const ALL: [Group; 9] = [
        Group::Process,
        Group::Ipc,
        Group::Time,
        Group::Exec,
        Group::Net,
        Group::Memory,
        Group::Webhooks,
        Group::Inference,
        Group::Fs,
    ];

    /// The name used in permission lists.
    pub fn name(self) -> &'static str {
        match self {
            Group::Process => "process",
            Group::Ipc => "ipc",
            Group::Time => "time",
            Group::Exec => "exec",
            Group::Net => "net",
            Group::Memory => "memory",
            Group::Webhooks => "webhooks",
            Group::Inference => "inference",
            Group::Fs => "fs",
        }
    }

    pub fn parse(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The calls of the group, in [`Call::ALL`] order.
    pub fn calls(self) -> impl Iterator<Item = Call> {
        Call::ALL
            .into_iter()
            .filter(move |c| c.info().group == Some(self))
    }
}

/// One entry of the syscall table.
#[derive(Debug)]
pub struct SyscallInfo {
    pub call: Call,
    /// The wire name, e.g. `FS_READ`.
    pub name: &'static str,
    /// The permission group that grants it, if any.
    pub group: Option<Group>,
    pub access: Access,
    pub durability: Durability,
    /// Answered on the connection's own task rather than a task of its
    /// own: the call neither blocks nor waits for the group commit.
    pub inline: bool,
    /// Offered to models (in prompts, tools, grammars). LLM_INFER and
    /// AGENT_INFO are not: the runtime performs inference and reads its own
    /// description itself.
    pub offered: bool,
    /// The name of the argument type (in `args.rs`; `ArgsObject` when the
    /// handler reads the arguments object itself).
    pub args: &'static str,
    /// One line telling a model what the call does.
    pub description: &'static str,
    /// The JSON schema of the arguments object, exactly as the daemon
    /// accepts it (see [`crate::abi::json_schema`]).
    pub schema: fn() -> Value,
    /// A short valid arguments object, for corrective messages and examples.
    pub example: fn() -> Value,
}

/// Declares the syscall table: generates [`Call`], `Call::ALL`, the name
/// conversions, the argument type check and the [`SyscallInfo`] of every
/// call, all in the order of the entries.
macro_rules! syscalls {
    ($(
        $(#[$doc:meta])*
        $name:ident {
            group: $group:expr,
            access: $access:expr,
            durability: $durability:expr,
            inline: $inline:expr,
            offered: $offered:expr,
            args: $args:ty,
            description: $description:literal,
            schema: $schema:expr,
            example: $example:expr $(,)?
        }
    )*) => {
        /// Every syscall of the ABI. Names on the wire are the variant names.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub enum Call {
            $(
                #[doc = $description]
                $(#[$doc])*
                $name,
            )*
        }

        pub(super) static TABLE: [$crate::abi::calls::SyscallInfo; Call::COUNT] = [$(
            $crate::abi::calls::SyscallInfo {
                call: Call::$name,
                name: stringify!($name),
                group: $group,
                access: $access,
                durability: $durability,
                inline: $inline,
                offered: $offered,
                args: stringify!($args),
                description: $description,
                schema: $schema,
                example: $example,
            },
        )*];

        impl Call {
            pub const COUNT: usize = [$(stringify!($name)),*].len();

            /// Every call, in table order.
            pub const ALL: [Call; Call::COUNT] = [$(Call::$name),*];

            /// The call with this wire name (exact, SCREAMING_CASE).
            pub fn parse(name: &str) -> Option<Call> {
                match name {
                    $(stringify!($name) => Some(Call::$name),)*
                    _ => None,
                }
            }

            /// Whether `args` deserializes into the call's argument type
            /// (the tests hold every schema to its type with it).
            pub fn check_args(self, args: &::serde_json::Value) -> Result<(), ::serde_json::Error> {
                use ::serde::Deserialize as _;
                match self {
                    $(Call::$name => <$args>::deserialize(args).map(drop),)*
                }
            }
        }
    };
}

mod table;

pub use table::Call;
use table::TABLE;

impl Call {
    /// The call's entry in the syscall table.
    pub fn info(self) -> &'static SyscallInfo {
        &TABLE[self as usize]
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Calls every agent may make whatever its permission list says.
    pub fn always_allowed(self) -> bool {
        self.info().access == Access::Always
    }

    /// Names that are permissions only: granting them changes what another
    /// call may do; calling them answers ENOSYS.
    pub fn is_permission_only(self) -> bool {
        self.info().access == Access::PermissionOnly
    }

    /// Whether the call only reads state. Journal entries of read-only calls
    /// ride the next group commit instead of delaying the reply.
    pub fn is_read_only(self) -> bool {
        self.info().durability == Durability::ReadOnly
    }

    /// Whether the connection task answers the call itself.
    pub fn answered_inline(self) -> bool {
        self.info().inline
    }
}

/// A permission list named something that is neither a call nor a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission {0:?} (a call name, one of the groups {groups}, or *)",
    groups = Group::ALL.map(Group::name).join(", ")
)]
pub struct UnknownPermission(pub String);

impl From<UnknownPermission> for super::SysError {
    fn from(e: UnknownPermission) -> Self {
        super::SysError::inval(e.to_string())
    }
}

/// Expands a permission list (call names, group names, or `*`) into calls.
pub fn expand_permissions(list: &[String]) -> Result<BTreeSet<Call>, UnknownPermission> {
    let mut out = BTreeSet::new();
    for item in list {
        let item = item.trim();
        if item == "*" {
            out.extend(Call::ALL);
        } else if let Some(group) = Group::parse(item) {
            out.extend(group.calls());
        } else if let Some(call) = Call::parse(&item.to_ascii_uppercase()) {
            out.insert(call);
        } else {
            return Err(UnknownPermission(item.to_string()));
        }
    }
    Ok(out)
}
