//! Writing a file so that a reader sees the old one or the whole new one, never a truncated
//! one: a temporary file beside it, synced, renamed over it (a leaf: every writer uses it).
use anyhow::{Context as _, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`, so
/// a reader sees either the old file or the whole new one, never a truncated one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_atomically(path, "tmp", |tmp| {
        let mut f = fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })
}

/// Lets `write` create a temporary file beside `path` (named `.<name>.<pid>.<suffix>`, the
/// suffix for writers that choose the format by extension), then renames it over `path`; on
/// any error the temporary file is removed and the error names `path`.
pub fn replace_atomically(
    path: &Path,
    suffix: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let tmp = path.with_file_name(format!(".{name}.{}.{suffix}", std::process::id()));
    let guard = crate::stop::writing(&tmp);
    let result = write(&tmp).and_then(|()| Ok(fs::rename(&tmp, path)?));
    drop(guard);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| {
        format!(
            "cannot write '{}' (check the free space and permissions there, or choose another --out)",
            path.display()
        )
    })
}
