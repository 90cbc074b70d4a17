//! FS_READ.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nix::fcntl::OFlag;
use serde_json::{Value, json};

use super::Workspace;
use super::args::{Encoding, READ_FIELDS, ReadArgs, parse_args};
use super::errors::{io_path_err, path_err};
use super::open::{file_size, len_u64, open_checked, probe, require_regular};
use super::path::WsPath;
use crate::abi::errno::{Errno, SysError};
use crate::drivers::creds::AgentCreds;

/// Reads at most `limit` bytes of `file` from `offset`, and never past `size`.
fn read_range(file: &File, offset: u64, limit: u64, size: u64) -> io::Result<Vec<u8>> {
    if offset >= size || limit == 0 {
        return Ok(Vec::new());
    }
    let want = limit.min(size - offset);
    let mut buf = Vec::new();
    buf.try_reserve_exact(usize::try_from(want).unwrap_or(usize::MAX))
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "read buffer too large"))?;
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.take(want).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Most names the error of an FS_READ of a directory shows.
const SHOWN_ENTRIES: usize = 20;

/// FS_READ of a directory: the error names what it holds, so that the
/// next call can read one of its files.
fn directory_named(ws: &Workspace, raw: &str, e: SysError) -> SysError {
    let Ok(listing) = super::fs_list(ws, &json!({ "path": raw })) else {
        return e;
    };
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str())
        .collect();
    if names.is_empty() {
        return SysError::new(e.code, format!("{}; it is empty", e.message));
    }
    let dir = raw.trim_end_matches('/');
    let more = names.len().saturating_sub(SHOWN_ENTRIES);
    SysError::new(
        e.code,
        format!(
            "{} holding {}{}: read a file of it by its path, e.g. {dir}/{}",
            e.message,
            names[..names.len().min(SHOWN_ENTRIES)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            names[0]
        ),
    )
}

/// FS_READ `{"path", "offset"?, "max_bytes"?, "encoding"?}` →
/// `{"content", "size", "truncated", "encoding"}`.
///
/// Returns at most `min(max_bytes, limits.max_read_bytes)` bytes from `offset`
/// (default 0); `size` is the file's size, `truncated` tells that the file goes
/// on past what was returned. With the default encoding "utf8" the bytes must be
/// UTF-8 (EINVAL otherwise, pointing at "encoding": "base64"); a character cut
/// in two by the size limit is left out of `content`.
pub fn fs_read(ws: &Workspace, args: &Value) -> Result<Value, SysError> {
    const OP: &str = "FS_READ";
    let a: ReadArgs = parse_args(OP, args, READ_FIELDS)?;
    let path = WsPath::parse(OP, &a.path)?;
    let encoding = a.encoding.unwrap_or_default();
    let offset = a.offset.unwrap_or(0);
    let max_read = ws.limits.max_read_bytes;
    let limit = a.max_bytes.map_or(max_read, |m| m.min(max_read));
    let read = || -> Result<(Vec<u8>, u64), SysError> {
        let _creds = AgentCreds::enter(ws.uid, ws.gid)?;
        let root_fd = ws.root()?;
        let root = root_fd.as_fd();
        let rel = path.rel();
        let st = probe(root, &rel).map_err(|e| path_err(e, OP, &path))?;
        require_regular(&st, OP, &path)?;
        let (file, st) = open_checked(root, &rel, OFlag::O_RDONLY, OP, &path)?;
        let size = file_size(&st);
        let bytes = read_range(&file, offset, limit, size)
            .map_err(|e| io_path_err(&e, OP, &path, "reading failed"))?;
        Ok((bytes, size))
    };
    let (bytes, size) = match read() {
        Err(e) if e.code == Errno::EISDIR => return Err(directory_named(ws, &a.path, e)),
        other => other?,
    };
    let cut_by_limit = offset.saturating_add(len_u64(&bytes)) < size;
    let content = match encoding {
        Encoding::Base64 => STANDARD.encode(&bytes),
        Encoding::Utf8 => {
            let not_utf8 = |at: usize| {
                SysError::inval(format!(
                    "{OP} {}: the content is not valid UTF-8 (at byte {}); \
                     read it with \"encoding\": \"base64\"",
                    path.shown(),
                    offset.saturating_add(len_u64(&bytes[..at]))
                ))
            };
            match std::str::from_utf8(&bytes) {
                Ok(text) => text.to_owned(),
                // Only a character cut in two by the size limit is forgiven.
                Err(e) if cut_by_limit && e.error_len().is_none() => {
                    std::str::from_utf8(&bytes[..e.valid_up_to()])
                        .map_err(|_| not_utf8(e.valid_up_to()))?
                        .to_owned()
                }
                Err(e) => return Err(not_utf8(e.valid_up_to())),
            }
        }
    };
    let returned = match encoding {
        Encoding::Base64 => len_u64(&bytes),
        Encoding::Utf8 => len_u64(content.as_bytes()),
    };
    Ok(json!({
        "content": content,
        "size": size,
        "truncated": offset.saturating_add(returned) < size,
        "encoding": encoding.as_str(),
    }))
}
