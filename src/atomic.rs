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

/// Whether `name` is a temporary file's (`.<name>.<pid>.<suffix>`, [`replace_atomically`]).
pub fn is_temporary(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    name.starts_with('.')
        && parts.len() >= 4
        && parts[parts.len() - 2].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 2].is_empty()
}

/// Removes the temporary files (`.<name>.<pid>.<suffix>`) that writers killed before their
/// rename left in `dir`; for a command that holds `dir` alone (`crate::lock`), so no live
/// writer's file is among them. Returns how many it removed.
pub fn remove_temporaries(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && is_temporary(&name.to_string_lossy()) && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// The process, other than this one, that is writing a set into `<out>/.<name>.<pid>.staging`
/// now: one whose PID is alive and runs this very program. The lock (`crate::lock`) keeps a
/// second writer out; this catches one whose lock file was removed while it ran, before its
/// staging directory is taken for a killed writer's and removed. (On a file system shared by
/// machines, another machine's PIDs mean nothing here: there the lock alone guards.)
pub fn live_writer(out: &Path, name: &str) -> Option<u32> {
    let prefix = format!(".{name}.");
    let me = fs::read_link("/proc/self/exe").ok()?;
    fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let pid = file_name.strip_prefix(&prefix)?.strip_suffix(".staging")?;
            pid.parse::<u32>().ok()
        })
        .filter(|&pid| pid != std::process::id())
        .find(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == me))
}

/// A new, empty hidden directory `<out>/.<name>.<pid>.staging` for a set of files that will
/// take the place of `<out>/<name>` ([`swap_in`]); first removes what earlier commands that
/// were killed left (their staging and replaced directories). For a command that holds
/// `<out>/<name>` alone (`crate::lock`).
pub fn staging_dir(out: &Path, name: &str) -> Result<std::path::PathBuf> {
    clear_left(out, name);
    let prefix = format!(".{name}.");
    let stage = out.join(format!("{prefix}{}.staging", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir(&stage).with_context(|| {
        format!(
            "cannot create '{}' (choose a writable --out)",
            stage.display()
        )
    })?;
    Ok(stage)
}

/// Removes what earlier commands that were killed left in `out` for `<out>/<name>`: their
/// staging (`.<name>.<pid>.staging`) and replaced (`.<name>.<pid>.replaced`) directories.
/// For a command that holds `<out>/<name>` alone (`crate::lock`).
pub fn clear_left(out: &Path, name: &str) {
    let prefix = format!(".{name}.");
    for entry in fs::read_dir(out).into_iter().flatten().flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let left = [".staging", ".replaced"]
            .iter()
            .filter_map(|s| rest.strip_suffix(s))
            .any(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if left && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Puts the directory `stage` in the place of `dir` in one step (Linux's
/// `renameat2(RENAME_EXCHANGE)`), then removes the previous set. Where the file system cannot
/// exchange (NFS), two renames: `dir` aside as `.<name>.<pid>.replaced`, then `stage` in; for
/// the moment between them `dir` is missing, never mixed.
pub fn swap_in(stage: &Path, dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cannot = || format!("cannot move '{}' to '{}'", stage.display(), dir.display());
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(anyhow::Error::from);
    let (from, to) = (c(stage)?, c(dir)?);
    // SAFETY: two valid NUL-terminated paths; the call only renames.
    let exchanged = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    } == 0;
    if exchanged {
        let _ = fs::remove_dir_all(stage);
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::NotFound && !dir.exists() {
        return fs::rename(stage, dir).with_context(cannot);
    }
    let name = dir
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy());
    let replaced = dir.with_file_name(format!(".{name}.{}.replaced", std::process::id()));
    fs::rename(dir, &replaced).with_context(cannot)?;
    fs::rename(stage, dir).with_context(cannot)?;
    let _ = fs::remove_dir_all(&replaced);
    Ok(())
}

/// `e` with every mention of the staging directory `stage` said as `dir`, where its files were
/// going (a write error names the file the user knows).
pub fn named_as(e: anyhow::Error, stage: &Path, dir: &Path) -> anyhow::Error {
    if e.is::<crate::stop::Stopped>() {
        return e;
    }
    let (stage, dir) = (stage.display().to_string(), dir.display().to_string());
    anyhow::anyhow!("{}", format!("{e:#}").replace(&stage, &dir))
}
