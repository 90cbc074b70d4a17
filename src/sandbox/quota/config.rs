//! The `[workspaces]` section of the daemon's configuration: how workspace
//! quotas are enforced, and where the workspace image lives and how large
//! it is. Sizes are bytes or a number with `K`, `M`, `G` or `T` (powers of
//! 1024, optionally followed by `iB`).

use serde::Deserialize;
use std::path::PathBuf;

/// Smallest workspace image: `mkfs.btrfs` needs ~110 MiB for a filesystem
/// of its own (system, metadata and data chunks); below 256 MiB little of
/// the image would be left for workspaces.
pub const MIN_IMAGE_BYTES: u64 = 256 << 20;
/// Default size of the workspace image.
pub const DEFAULT_IMAGE_BYTES: u64 = 8 << 30;
/// File name of the default image, in the state directory.
pub const DEFAULT_IMAGE_NAME: &str = "workspaces.img";

/// How workspace quotas are enforced — `[workspaces] quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// The image if it exists, else native btrfs if the workspaces
    /// directory is on btrfs and simple quotas can be used there, else the
    /// image (created on first use).
    #[default]
    Auto,
    /// Subvolumes on the state directory's own btrfs filesystem; start
    /// fails if it is not btrfs.
    Native,
    /// Subvolumes on the loop-mounted workspace image, whatever the state
    /// directory's filesystem.
    Image,
    /// No kernel enforcement: only FS_WRITE checks the quota (agents' own
    /// writes and EXEC_CMD's are bounded per file by RLIMIT_FSIZE only).
    Off,
}

/// A quota mode that is none of `auto`, `native`, `image`, `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quota mode {0:?}: use auto, native, image or off")]
pub struct UnknownQuotaMode(pub String);

impl std::str::FromStr for QuotaMode {
    type Err = UnknownQuotaMode;
    fn from_str(s: &str) -> Result<QuotaMode, UnknownQuotaMode> {
        [
            QuotaMode::Auto,
            QuotaMode::Native,
            QuotaMode::Image,
            QuotaMode::Off,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| UnknownQuotaMode(s.to_string()))
    }
}

impl QuotaMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaMode::Auto => "auto",
            QuotaMode::Native => "native",
            QuotaMode::Image => "image",
            QuotaMode::Off => "off",
        }
    }
}

/// A size in bytes, written as a number of bytes or a string such as
/// `"8G"`, `"512MiB"`, `"1073741824"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"<digits>[K|M|G|T][iB]"` or `"<digits>[B]"`, case-insensitive,
    /// spaces allowed between the number and the unit.
    pub fn parse(text: &str) -> Result<ByteSize, SizeError> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| SizeError::NotASize(text.to_string()))?;
        let unit = unit.trim().to_ascii_lowercase();
        let shift = match unit.as_str() {
            "" | "b" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            "t" | "tib" => 40,
            "kb" | "mb" | "gb" | "tb" => {
                let letter = unit.chars().next().unwrap_or('G').to_ascii_uppercase();
                return Err(SizeError::DecimalUnit(text.to_string(), letter));
            }
            _ => return Err(SizeError::NotASize(text.to_string())),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| SizeError::TooLarge(text.to_string()))
    }
}

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "{0:?} is not a size: give bytes, or a whole number with K, M, G or T (powers of 1024), e.g. \"8G\""
    )]
    NotASize(String),
    #[error("{0:?}: write {1} or {1}iB: sizes are powers of 1024")]
    DecimalUnit(String, char),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl std::str::FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<ByteSize, SizeError> {
        ByteSize::parse(s)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: bytes, or a string such as \"8G\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is not a size: it is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&show_bytes(self.0))
    }
}

/// `8.0 GiB`, `512.0 MiB`, `300 bytes`.
pub fn show_bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    UNITS
        .iter()
        .find(|(_, shift)| n >= 1u64 << shift)
        .map(|(unit, shift)| format!("{:.1} {unit}", n as f64 / (1u64 << shift) as f64))
        .unwrap_or_else(|| format!("{n} bytes"))
}

/// `[workspaces]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspacesConfig {
    pub quota: QuotaMode,
    /// The workspace image; default `<state_dir>/workspaces.img`. Must be
    /// an absolute path outside `<state_dir>/workspaces`.
    pub image: Option<PathBuf>,
    /// Size of the image when it is created (an existing image keeps its size).
    pub image_size: ByteSize,
}

impl Default for WorkspacesConfig {
    fn default() -> Self {
        WorkspacesConfig {
            quota: QuotaMode::Auto,
            image: None,
            image_size: ByteSize(DEFAULT_IMAGE_BYTES),
        }
    }
}

/// Why a `[workspaces]` section is refused: the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("workspaces.{key}: {message}")]
pub struct WorkspacesConfigError {
    pub key: &'static str,
    pub message: String,
}

impl WorkspacesConfig {
    /// Checks what can be checked without the state directory.
    pub fn validate(&self) -> Result<(), WorkspacesConfigError> {
        if self.image_size.0 < MIN_IMAGE_BYTES {
            return Err(WorkspacesConfigError {
                key: "image_size",
                message: format!(
                    "{} is too small: the image must be at least {} (mkfs.btrfs alone needs ~110 MiB)",
                    self.image_size,
                    show_bytes(MIN_IMAGE_BYTES)
                ),
            });
        }
        if let Some(image) = &self.image {
            if !image.is_absolute() {
                return Err(WorkspacesConfigError {
                    key: "image",
                    message: format!("{} is not an absolute path", image.display()),
                });
            }
        }
        Ok(())
    }
}
