//! Fetches files over HTTP(S) with a progress bar, verifies their MD5 checksums and moves them
//! into place only when every one of them is right.
use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A file to fetch and its published MD5 checksum (lower-case hex).
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    pub name: &'a str,
    pub md5: &'a str,
}

/// Downloads `base_url/<name>` for every resource into `dir`.
///
/// Each file is first written to a temporary name and hashed on the way; only when all of
/// them are complete and match their checksums are they renamed into place. On any error
/// nothing new is left in `dir`.
pub fn fetch_all(base_url: &str, resources: &[Resource<'_>], dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the cache directory '{}'", dir.display()))?;
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| -> Result<()> {
        for r in resources {
            let url = format!("{}/{}", base_url.trim_end_matches('/'), r.name);
            let tmp = dir.join(format!(".{}.{}.part", r.name, std::process::id()));
            staged.push((tmp.clone(), dir.join(r.name)));
            let digest = fetch_one(&url, &tmp)?;
            if !digest.eq_ignore_ascii_case(r.md5) {
                bail!(
                    "checksum mismatch for {url}: expected MD5 {}, got {digest}; the download is \
                     corrupt or the mirror serves another file, so nothing was saved",
                    r.md5
                );
            }
        }
        for (tmp, dest) in &staged {
            fs::rename(tmp, dest)
                .with_context(|| format!("cannot move the download to '{}'", dest.display()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// Streams one URL into `dest`, returning the MD5 of what was written.
fn fetch_one(url: &str, dest: &Path) -> Result<String> {
    let response = ureq::get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let total: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.parse().ok());
    let bar = crate::progress::bytes_bar(total, url.rsplit('/').next().unwrap_or(url));
    let mut reader = response.into_reader();
    let mut file =
        fs::File::create(dest).with_context(|| format!("cannot write '{}'", dest.display()))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("download of {url} was interrupted"))?;
        if n == 0 {
            break;
        }
        if crate::stop::requested().is_some() {
            return Err(crate::stop::Stopped::interrupted("the download was abandoned").into());
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("cannot write '{}'", dest.display()))?;
        received += n as u64;
        bar.set_position(received);
    }
    file.sync_all()?;
    bar.finish_and_clear();
    if let Some(n) = total {
        if received != n {
            bail!("download of {url} ended after {received} of {n} bytes");
        }
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 of a file, lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    Ok(hex(&Md5::digest(&bytes)))
}
