//! Fashion-MNIST: find it, or download and verify it, then parse it into tensors on the device.
//!
//! Places searched, in order: `--data-dir`, `$FASHION_MNIST_DIR`, Debian's
//! `/usr/share/datasets/fashion-mnist` (package `dataset-fashion-mnist`), and the user's cache
//! directory. When none holds the four files they are downloaded into the cache from the
//! mirror torchvision uses, unless `--offline` is given.
use super::download::{self, Resource};
use super::{idx, Split};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The data set's canonical mirror (torchvision's); `$FASHION_MNIST_MIRROR` overrides it.
pub const MIRROR: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
/// Debian's `dataset-fashion-mnist` installs the data set here.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The four files as published, with their published MD5 checksums.
pub const RESOURCES: [Resource<'static>; 4] = [
    Resource {
        name: "train-images-idx3-ubyte.gz",
        md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    },
    Resource {
        name: "train-labels-idx1-ubyte.gz",
        md5: "25c81989df183df01b3e8a0aad5dffbe",
    },
    Resource {
        name: "t10k-images-idx3-ubyte.gz",
        md5: "bef4ecab320f06d8554ea6380940ec79",
    },
    Resource {
        name: "t10k-labels-idx1-ubyte.gz",
        md5: "bb300cfdad3c16e7a12a480ee83cd310",
    },
];
pub const N_TRAIN: usize = 60_000;
pub const N_TEST: usize = 10_000;
pub const NUM_INPUTS: i64 = (idx::ROWS * idx::COLS) as i64;
pub const NUM_CLASSES: i64 = idx::CLASSES as i64;

/// The training and test splits on the device: images f32 in [0, 1] of shape `[N, 784]`
/// (`ToTensor`'s ÷255), labels i64.
pub struct FashionMnist {
    pub train: Split,
    pub test: Split,
    /// Where the files were read from.
    pub dir: PathBuf,
}

/// Where to look, where to download to, and whether downloading is allowed.
#[derive(Debug, Clone)]
pub struct Source {
    /// `--data-dir`: when given, the data set must be there.
    pub data_dir: Option<PathBuf>,
    /// `$FASHION_MNIST_DIR`: when set, the data set must be there.
    pub env_dir: Option<PathBuf>,
    /// Debian's directory, searched when neither of the above is given.
    pub system_dir: Option<PathBuf>,
    /// Searched last, and where a download goes.
    pub cache: PathBuf,
    /// Base URL of the mirror.
    pub mirror: String,
    pub offline: bool,
}

impl Source {
    /// The places of the command line and the environment: `--data-dir`,
    /// `$FASHION_MNIST_DIR`, Debian's directory, the cache; `$FASHION_MNIST_MIRROR` or the
    /// canonical mirror.
    pub fn new(data_dir: Option<PathBuf>, offline: bool) -> Source {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Source {
            data_dir,
            env_dir: var("FASHION_MNIST_DIR").map(PathBuf::from),
            system_dir: Some(PathBuf::from(DEBIAN_DIR)),
            cache: cache_dir(),
            mirror: var("FASHION_MNIST_MIRROR")
                .and_then(|m| m.into_string().ok())
                .unwrap_or_else(|| MIRROR.to_string()),
            offline,
        }
    }
}

/// `train-images-idx3-ubyte.gz` or, failing that, the uncompressed `train-images-idx3-ubyte`.
fn file_in(dir: &Path, gz_name: &str) -> Option<PathBuf> {
    let gz = dir.join(gz_name);
    let raw = dir.join(gz_name.trim_end_matches(".gz"));
    [gz, raw].into_iter().find(|p| p.is_file())
}

/// The files `dir` lacks, each named with what stands in its place when something does (a
/// directory, a FIFO, a device, a broken or looping link).
fn missing_in(dir: &Path) -> Vec<String> {
    RESOURCES
        .iter()
        .filter(|r| file_in(dir, r.name).is_none())
        .map(|r| {
            let gz = dir.join(r.name);
            let raw = dir.join(r.name.trim_end_matches(".gz"));
            match [gz, raw].iter().find_map(|p| not_a_file(p)) {
                Some(what) => format!("{} (there is {what}, not a regular file)", r.name),
                None => r.name.to_string(),
            }
        })
        .collect()
}

/// What `path` is when something exists there that is not a regular file.
fn not_a_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let link = std::fs::symlink_metadata(path).ok()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    let kind = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => return None,
        Ok(m) if m.is_dir() => "a directory",
        Ok(m) if m.file_type().is_fifo() => "a FIFO",
        Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => "a device",
        Ok(m) if m.file_type().is_socket() => "a socket",
        Ok(_) => "something",
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => "a link that loops",
        Err(_) if link.file_type().is_symlink() => "a broken link",
        Err(_) => "something unreadable",
    };
    Some(format!("{kind} named {name}"))
}

/// `$XDG_CACHE_HOME/d2l-regularization/fashion-mnist`, or `~/.cache/…`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("d2l-regularization").join("fashion-mnist")
}

const WAYS: &str = "Get it in one of these ways:\n  \
    - sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu; installs into /usr/share/datasets/fashion-mnist)\n  \
    - run without --offline (and without --data-dir / FASHION_MNIST_DIR) to download it into the cache\n  \
    - put the four files (.gz or uncompressed) in a directory and pass --data-dir DIR or set FASHION_MNIST_DIR";

/// The directory holding all four files.
///
/// A directory the user named (`--data-dir`, then `$FASHION_MNIST_DIR`) must hold them.
/// Otherwise Debian's directory and the cache are searched, and when neither holds them they
/// are downloaded into the cache (unless offline). Every failure lists the places searched and
/// the ways to get the data.
pub fn locate(source: &Source) -> Result<PathBuf> {
    let explicit = [
        ("--data-dir", &source.data_dir),
        ("$FASHION_MNIST_DIR", &source.env_dir),
    ];
    if let Some((label, Some(dir))) = explicit.iter().find(|(_, d)| d.is_some()) {
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{label} {}: no such directory.\n{WAYS}", dir.display())
            }
            Err(e) => bail!("{label} {}: cannot read it ({e}).\n{WAYS}", dir.display()),
            Ok(m) if !m.is_dir() => bail!(
                "{label} {} is not a directory; give the directory that holds the four files.\n{WAYS}",
                dir.display()
            ),
            Ok(_) => {}
        }
        let missing = missing_in(dir);
        if missing.is_empty() {
            return Ok(dir.clone());
        }
        bail!(
            "{label} {} lacks {} (each may also be uncompressed).\n{WAYS}",
            dir.display(),
            missing.join(", ")
        );
    }
    let mut report = Vec::new();
    for dir in source.system_dir.iter().chain([&source.cache]) {
        let missing = missing_in(dir);
        if missing.is_empty() {
            return Ok(dir.clone());
        }
        report.push(format!("  {} lacks {}", dir.display(), missing.join(", ")));
    }
    let why = if source.offline {
        "--offline was given, so nothing was downloaded".to_string()
    } else {
        crate::errln!(
            "Fashion-MNIST not found locally; downloading it from {} into {}",
            source.mirror,
            source.cache.display()
        );
        match download::fetch_all(&source.mirror, &RESOURCES, &source.cache) {
            Ok(()) => return Ok(source.cache.clone()),
            Err(e) if e.is::<crate::stop::Stopped>() => return Err(e),
            Err(e) => format!("the download from {} failed: {e:#}", source.mirror),
        }
    };
    bail!(
        "Fashion-MNIST not found. Searched:\n{}\n{why}.\n{WAYS}",
        report.join("\n")
    )
}

/// Parses the four files of `dir` and moves both splits to `device` once. Every file's
/// format is checked before the splits' sizes, so a corrupt file is named as such.
pub fn load_dir(dir: &Path, device: Device) -> Result<FashionMnist> {
    let read = |images: &str, labels: &str| -> Result<(PathBuf, Vec<u8>, Vec<u8>)> {
        let images = file_in(dir, images).unwrap_or_else(|| dir.join(images));
        let labels = file_in(dir, labels).unwrap_or_else(|| dir.join(labels));
        let (pixels, labels) = idx::read_split(&images, &labels)?;
        Ok((images, pixels, labels))
    };
    let train = read(RESOURCES[0].name, RESOURCES[1].name)?;
    let test = read(RESOURCES[2].name, RESOURCES[3].name)?;
    for ((path, _, labels), expected) in [(&train, N_TRAIN), (&test, N_TEST)] {
        if labels.len() != expected {
            bail!(
                "'{}' holds {} images, expected {expected}; is it the Fashion-MNIST file?",
                path.display(),
                labels.len()
            );
        }
    }
    Ok(FashionMnist {
        train: to_split(&train.1, &train.2, device),
        test: to_split(&test.1, &test.2, device),
        dir: dir.to_path_buf(),
    })
}

/// Finds (or downloads) the data set, then loads it onto `device`.
pub fn load(source: &Source, device: Device) -> Result<FashionMnist> {
    load_dir(&locate(source)?, device)
}

/// Bytes → tensors on the device: images `[N, 784]` f32 = byte / 255, labels i64.
pub fn to_split(pixels: &[u8], labels: &[u8], device: Device) -> Split {
    let n = labels.len() as i64;
    let x = Tensor::from_slice(pixels)
        .to_device(device)
        .reshape([n, NUM_INPUTS])
        .to_kind(Kind::Float)
        / 255.0;
    let y = Tensor::from_slice(labels)
        .to_device(device)
        .to_kind(Kind::Int64);
    Split { x, y }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_the_absent_files() {
        let dir = std::env::temp_dir().join(format!("fm-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("train-images-idx3-ubyte"), b"x").unwrap();
        let missing = missing_in(&dir);
        assert_eq!(missing.len(), 3);
        assert!(!missing.iter().any(|m| m.starts_with("train-images")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
