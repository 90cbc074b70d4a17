//! `agentos cp`: copies between the host and an agent's workspace (the
//! host side in `agentos::admin::hostcopy`, the workspace side in the
//! daemon's file driver).

use super::{Cli, CliError, decode};
use agentos::admin::client::Client;
use agentos::admin::hostcopy::{self, HostCopyError};
use agentos::admin::protocol::AdminRequest;
use agentos::drivers::fs::{CopiedIn, CopiedOut};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// `agentos cp`: into a running agent's workspace in batches, or out of
/// any agent's.
pub(super) fn copy(c: &mut Client, cli: &Cli, src: &str, dest: &str) -> Result<ExitCode, CliError> {
    let usage = |m: &str| CliError::HostCopy(HostCopyError::Usage(m.to_string()));
    match (hostcopy::agent_path(src), hostcopy::agent_path(dest)) {
        (None, Some((pid, to))) => {
            let tree = hostcopy::read_host(Path::new(src), to)?;
            note_left_out(&tree.skipped);
            let mut total = CopiedIn::default();
            for batch in hostcopy::batches(tree.entries) {
                let v = c.call(&AdminRequest::CopyIn {
                    pid,
                    entries: batch,
                })?;
                let done: CopiedIn = decode(v)?;
                total.files += done.files;
                total.dirs += done.dirs;
                total.bytes += done.bytes;
            }
            if cli.json {
                println!("{}", serde_json::to_string(&total).unwrap_or_default());
            } else {
                println!(
                    "copied {} files, {} directories ({} bytes) into agent {pid}:{to}",
                    total.files, total.dirs, total.bytes
                );
            }
        }
        (Some((pid, from)), None) => {
            let v = c.call(&AdminRequest::CopyOut {
                pid,
                path: from.to_string(),
            })?;
            let out: CopiedOut = decode(v)?;
            let left_out: Vec<String> = out
                .skipped
                .iter()
                .map(|s| format!("{pid}:{from}/{s}"))
                .collect();
            note_left_out(&left_out);
            let done = hostcopy::write_host(&out, from, Path::new(dest))?;
            if cli.json {
                println!(
                    "{}",
                    json!({"files": done.files, "dirs": done.dirs, "bytes": done.bytes, "target": done.target})
                );
            } else {
                println!(
                    "copied {} files, {} directories ({} bytes) from agent {pid}:{from} to {}",
                    done.files,
                    done.dirs,
                    done.bytes,
                    done.target.display()
                );
            }
        }
        (Some(_), Some(_)) => {
            return Err(usage(
                "agentos cp: copy between two agents through the host (one side must be a host path)",
            ));
        }
        (None, None) => {
            return Err(usage(
                "agentos cp: one side must name an agent's workspace as PID:PATH (e.g. 12:/out.txt)",
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr what a copy left out (symlinks, special files).
pub(super) fn note_left_out(paths: &[String]) {
    for p in paths {
        eprintln!(
            "agentos: left out {}: not a regular file or directory (symlinks are not followed)",
            agentos::terminal::escape(p)
        );
    }
}
