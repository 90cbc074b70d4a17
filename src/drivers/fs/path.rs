//! An agent's path, read lexically: normalised to components beneath the
//! workspace root, and quoted (shortened) for messages.

use std::borrow::Cow;

use crate::abi::errno::{Errno, SysError};

/// Longest path an agent may pass, in bytes.
pub(super) const MAX_PATH_BYTES: usize = 4096;
/// The first component of an absolute path that names the workspace root as the
/// agent's own process sees it (its workspace is mounted at `/workspace`).
pub(super) const AGENT_MOUNT: &str = "workspace";
/// Longest argument or path echoed back in an error message, in bytes.
pub(super) const MAX_ECHO_BYTES: usize = 200;

/// A path as the agent gave it, normalised lexically to components beneath the
/// workspace root: none of them is empty, `.` or `..`.
pub(super) struct WsPath<'a> {
    raw: &'a str,
    comps: Vec<&'a str>,
}

impl<'a> WsPath<'a> {
    /// Validates and normalises `raw`. "/workspace/a", "/a", "a" and "./a" all
    /// name the same file; only an absolute path loses a leading "workspace"
    /// component. A `..` that would climb above the root is EXDEV.
    pub(super) fn parse(op: &str, raw: &'a str) -> Result<Self, SysError> {
        let bad =
            |why: &str| SysError::inval(format!("bad arguments for {op}: field `path` {why}"));
        if raw.is_empty() {
            return Err(bad("is empty"));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(bad(&format!("is longer than {MAX_PATH_BYTES} bytes")));
        }
        if raw.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let mut parts = raw
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .peekable();
        if raw.starts_with('/') && parts.peek() == Some(&AGENT_MOUNT) {
            parts.next();
        }
        let mut comps = Vec::new();
        for part in parts {
            if part == ".." {
                if comps.pop().is_none() {
                    return Err(SysError::new(
                        Errno::EXDEV,
                        format!("{op} {}: path escapes the workspace", shown(raw)),
                    ));
                }
            } else {
                comps.push(part);
            }
        }
        Ok(WsPath { raw, comps })
    }

    /// The path relative to the root, "." for the root itself.
    pub(super) fn rel(&self) -> String {
        join_rel(&self.comps)
    }

    /// The components beneath the root (none for the root itself).
    pub(super) fn comps(&self) -> &[&'a str] {
        &self.comps
    }

    /// The parent components and the final name; `None` for the root.
    pub(super) fn split_last(&self) -> Option<(&[&'a str], &'a str)> {
        self.comps
            .split_last()
            .map(|(last, parents)| (parents, *last))
    }

    /// The agent's path, quoted (and shortened) for messages.
    pub(super) fn shown(&self) -> String {
        shown(self.raw)
    }
}

pub(super) fn join_rel(comps: &[&str]) -> String {
    if comps.is_empty() {
        ".".to_owned()
    } else {
        comps.join("/")
    }
}

pub(super) fn shown(raw: &str) -> String {
    format!("{:?}", clip(raw, MAX_ECHO_BYTES))
}

/// `s` cut to at most `max` bytes on a character boundary, marked with "…" if cut.
pub(super) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}
