//! The IDX format of (Fashion-)MNIST, gzip-compressed or raw, read with every check a
//! corrupt or mismatched file could fail.
use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
pub const ROWS: usize = 28;
pub const COLS: usize = 28;
pub const CLASSES: u8 = 10;

/// Reads a whole file, decompressing it when it starts with the gzip signature.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| {
                format!(
                "'{}' is a truncated or corrupt gzip file; delete it and fetch the data set again",
                path.display()
            )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], path: &Path, magic: u32, dims: usize) -> Result<Vec<usize>> {
    let len = 4 + 4 * dims;
    if bytes.len() < len {
        bail!(
            "'{}' is too short for an IDX header ({} bytes); the file is truncated",
            path.display(),
            bytes.len()
        );
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    let found = word(0);
    if found != magic {
        bail!(
            "'{}' has magic number 0x{found:08x}, expected 0x{magic:08x} ({}); is it the right file?",
            path.display(),
            if magic == IMAGES_MAGIC { "IDX images" } else { "IDX labels" }
        );
    }
    let dims: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let expected = len + dims.iter().product::<usize>();
    if bytes.len() != expected {
        bail!(
            "'{}' holds {} bytes but its header {:?} announces {expected}; the file is truncated or corrupt",
            path.display(),
            bytes.len(),
            dims
        );
    }
    Ok(dims)
}

/// 28×28 images as `count × 784` bytes, row after row.
pub fn read_images(path: &Path) -> Result<(usize, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let dims = header(&bytes, path, IMAGES_MAGIC, 3)?;
    if dims[1] != ROWS || dims[2] != COLS {
        bail!(
            "'{}' holds {}×{} images, expected {ROWS}×{COLS}",
            path.display(),
            dims[1],
            dims[2]
        );
    }
    Ok((dims[0], bytes[16..].to_vec()))
}

/// Labels 0–9.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    header(&bytes, path, LABELS_MAGIC, 1)?;
    let labels = bytes[8..].to_vec();
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= CLASSES) {
        bail!(
            "'{}': label {l} at index {i} is not a class 0–{}",
            path.display(),
            CLASSES - 1
        );
    }
    Ok(labels)
}

/// Images and labels of one split; both files must hold the same number of examples.
pub fn read_split(images: &Path, labels: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let (n, pixels) = read_images(images)?;
    let labels_v = read_labels(labels)?;
    if n != labels_v.len() {
        bail!(
            "'{}' holds {n} images but '{}' holds {} labels; the two files must belong together",
            images.display(),
            labels.display(),
            labels_v.len()
        );
    }
    Ok((pixels, labels_v))
}

/// Encodes an IDX file (used by the tests and handy for making small data sets).
pub fn encode(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&magic.to_be_bytes());
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
