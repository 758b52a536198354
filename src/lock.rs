//! One writer per results directory: an advisory `flock` on a lock file (`<out>/.<name>.lock`
//! beside a run command's directory, which is replaced whole; `<dir>/.lock` in a sweep's),
//! taken before anything is written there and held until the command ends (a killed process's
//! lock goes with it, so nothing stale ever blocks).
//!
//! A second command into a directory in use is refused at once, naming the process that holds
//! it: training runs last minutes to hours, and a command that silently waits that long looks
//! hung. The shards of one sweep share its directory (a shared lock on `.lock`, plus an
//! exclusive one on `.lock-shard-K-of-N`, so the same shard cannot run twice, and a shared one on
//! `.lock-shards-N`, so shards of another count cannot run beside them); a sweep without
//! `--shard` and `sweep merge` take `.lock` exclusively, so they wait for no shard and no shard
//! starts under them.
//!
//! On NFS, Linux (≥ 2.6.12) turns `flock` into a POSIX lock through the server's lock manager,
//! so machines sharing a directory exclude each other too; a server without a lock manager
//! (`nolock` mounts) makes every lock succeed locally, and the exclusion is then only between
//! processes of one machine. A lock-less file system's error is reported, not ignored.
use anyhow::{Context as _, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DirLock {
    _files: Vec<File>,
}

/// How a command uses a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The only writer (a run, a whole sweep, a merge).
    Alone,
    /// One shard of a sweep: beside the other shards, never beside a whole sweep or a merge,
    /// nor beside the same shard.
    Shard { index: usize, count: usize },
}

/// Takes the lock `main` that guards `dir` for `usage`, or says which process holds it.
pub fn lock(main: &Path, dir: &Path, usage: Use) -> Result<DirLock> {
    let main = main.to_path_buf();
    let main_file = open(&main)?;
    let taken = match usage {
        Use::Alone => main_file.try_lock(),
        Use::Shard { .. } => main_file.try_lock_shared(),
    };
    let mut files = vec![main_file];
    match taken {
        Ok(()) => still_at(&files[0], &main)?,
        Err(TryLockError::WouldBlock) => return Err(in_use(dir, &holders(&main))),
        Err(TryLockError::Error(e)) => return Err(cannot_lock(&main, e)),
    }
    let own = match usage {
        Use::Alone => main,
        Use::Shard { index, count } => {
            files.push(one_count(&main, dir, count)?);
            let path = shard_file(&main, &format!("{index}-of-{count}"));
            let file = open(&path)?;
            match file.try_lock() {
                Ok(()) => still_at(&file, &path)?,
                Err(TryLockError::WouldBlock) => return Err(in_use(dir, &[read_holder(&path)])),
                Err(TryLockError::Error(e)) => return Err(cannot_lock(&path, e)),
            }
            files.push(file);
            path
        }
    };
    // Who holds it, for the message another command gives.
    let file = files.last_mut().expect("a lock file");
    let me = format!("PID {} ({})\n", std::process::id(), command_line());
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()));
    written.with_context(|| format!("cannot write '{}'", own.display()))?;
    Ok(DirLock { _files: files })
}

/// Opens (creating) the lock file `path`, never through a symbolic link: in a directory
/// others can write (a shared `--out`), a link planted there would have the command truncate
/// and overwrite its target. A lock file that is not a regular file of this user's, with one
/// name, is refused by name, untouched.
fn open(path: &Path) -> Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let opened = no_follow(OpenOptions::new().read(true).write(true).create(true))
        .truncate(false)
        .mode(0o644)
        .open(path);
    let refuse = |what: &str| {
        anyhow::anyhow!(
            "the lock file '{}' is {what}; a lock file must be a regular file of your own: \
             remove it if nobody needs it (this program did not make it), or choose another --out",
            path.display()
        )
    };
    let file = match opened {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refuse("a symbolic link")),
        other => other.with_context(|| {
            format!(
                "cannot open the lock file '{}' (check the permissions there, or choose another \
                 --out)",
                path.display()
            )
        })?,
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read the lock file '{}'", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    if meta.uid() != me {
        return Err(refuse(&format!(
            "owned by another user (uid {})",
            meta.uid()
        )));
    }
    if meta.nlink() != 1 {
        return Err(refuse(&format!("a hard link ({} names)", meta.nlink())));
    }
    Ok(file)
}

/// Whether `file`, now locked, is still the one at `path`: a lock taken on a file that was
/// replaced or removed meanwhile guards nothing.
fn still_at(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (held, there) = (file.metadata().ok(), std::fs::symlink_metadata(path).ok());
    match (held, there) {
        (Some(h), Some(t)) if h.dev() == t.dev() && h.ino() == t.ino() => Ok(()),
        _ => anyhow::bail!(
            "the lock file '{}' was replaced or removed while this command took it: another \
             command may be starting there; run it again",
            path.display()
        ),
    }
}

fn cannot_lock(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot lock '{}' ({e}); this file system may not support locks: choose another --out",
        path.display()
    )
}

fn in_use(dir: &Path, holders: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "'{}' is in use by another command: {}; wait for it to finish, or choose another --out",
        dir.display(),
        holders.join(", ")
    )
}

/// `<main><suffix>`: a lock file beside `main`.
fn beside(main: &Path, suffix: &str) -> PathBuf {
    let name = main
        .file_name()
        .map_or(".lock".into(), |n| n.to_string_lossy());
    main.with_file_name(format!("{name}{suffix}"))
}

/// `<main>-shard-<which>`: the lock of one shard.
fn shard_file(main: &Path, which: &str) -> PathBuf {
    beside(main, &format!("-shard-{which}"))
}

/// Whether some process holds the lock file `path` (it cannot be locked now).
fn held(path: &Path) -> bool {
    let file = no_follow(OpenOptions::new().read(true).write(true)).open(path);
    file.is_ok_and(|f| matches!(f.try_lock(), Err(TryLockError::WouldBlock)))
}

/// `<main>-shards-<count>`, held shared by every running shard of `count` shards: shards
/// split the groups by their count, so a shard of another count (`0/2` beside `0/4`) would
/// train some groups twice at once, each picking up the other's live checkpoints. Refused,
/// naming the shards that run; a shard starting while another count's is being probed is
/// refused too (both may refuse: never both run).
fn one_count(main: &Path, dir: &Path, count: usize) -> Result<File> {
    let path = beside(main, &format!("-shards-{count}"));
    let file = open(&path)?;
    match file.try_lock_shared() {
        Ok(()) => still_at(&file, &path)?,
        Err(TryLockError::WouldBlock) => {
            anyhow::bail!(
                "'{}' is being started by shards of another count; run this one again",
                dir.display()
            )
        }
        Err(TryLockError::Error(e)) => return Err(cannot_lock(&path, e)),
    }
    let prefix = beside(main, "-shards-");
    let prefix = prefix
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let others = std::fs::read_dir(main.parent().unwrap_or(Path::new(".")))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let other: usize = n.strip_prefix(&prefix)?.parse().ok()?;
            (other != count).then_some((other, e.path()))
        });
    for (other, p) in others {
        if held(&p) {
            let suffix = format!("-of-{other}");
            let shards: Vec<String> = held_shards(main)
                .iter()
                .filter(|p| p.to_string_lossy().ends_with(&suffix))
                .map(|p| read_holder(p))
                .collect();
            anyhow::bail!(
                "'{}' is in use by shards of {other} ({}): every shard of a sweep must be given \
                 the same count (--shard K/{other}), or wait for them to finish",
                dir.display(),
                if shards.is_empty() {
                    "starting".to_string()
                } else {
                    shards.join(", ")
                }
            );
        }
    }
    Ok(file)
}

/// Who holds the lock `main`: the process named in it when it holds it alone, else every
/// shard that holds its own lock.
fn holders(main: &Path) -> Vec<String> {
    let shards = held_shards(main);
    if shards.is_empty() {
        vec![read_holder(main)]
    } else {
        shards.iter().map(|p| read_holder(p)).collect()
    }
}

/// The shard lock files beside `main` that some process holds, sorted.
fn held_shards(main: &Path) -> Vec<PathBuf> {
    let dir = main.parent().unwrap_or(Path::new("."));
    let prefix = shard_file(main, "");
    let prefix = prefix
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .filter(|p| held(p))
        .collect();
    shards.sort();
    shards
}

fn read_holder(path: &Path) -> String {
    let mut text = String::new();
    let _ = (no_follow(OpenOptions::new().read(true)).open(path))
        .and_then(|f| f.take(4096).read_to_string(&mut text));
    match text.trim() {
        "" => "a process that has not said which".to_string(),
        who => who.to_string(),
    }
}

fn command_line() -> String {
    crate::options::command_line().join(" ")
}

/// Options that open a path only if it is not a symbolic link (and never block on a FIFO).
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
}
