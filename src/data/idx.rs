//! The IDX format of (Fashion-)MNIST, gzip-compressed or raw, read with every check a
//! corrupt or mismatched file could fail.
//!
//! The parsers work on bytes and depend on nothing but `std` and `flate2`, so the fuzz
//! target (`fuzz/fuzz_targets/idx.rs`) compiles this file on its own; the `read_*` functions
//! add the file's name to every message.
//!
//! # Fuzzing
//!
//! `scripts/fuzz.sh 600` runs libFuzzer through cargo-fuzz for 600 s (installing cargo-fuzz if
//! missing). The target (`fuzz/fuzz_targets/idx.rs`) feeds arbitrary bytes, as given and gzip-wrapped, to the
//! reader's byte-level parsers (`src/data/idx.rs`, compiled on its own, without libtorch) through
//! one oracle, `idx::check_any_input`: no panic, and every accepted file keeps the reader's
//! promises (n·784 pixels, the counts the header gives, labels 0–9). It runs on the stable
//! toolchain (`RUSTC_BOOTSTRAP=1`, no sanitizer; Rust's overflow checks are on). Every crash it
//! ever found is kept in `tests/fuzz-crashes/idx/` and replayed through the same oracle by
//! `tests/reliability.rs`; the crate keeps overflow checks and debug assertions on in its release
//! build too (`Cargo.toml`), so the test suite catches an overflow the fuzzer would.
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
/// Largest decompressed file accepted (Fashion-MNIST's largest is 47 MB), so that a
/// corrupt or hostile gzip stream cannot exhaust memory.
pub const MAX_BYTES: usize = 128 << 20;

/// Why bytes are not a usable IDX file: a phrase that follows the file's name.
pub type Problem = String;

/// The file's bytes, decompressed when they start with the gzip signature (uncompressed
/// bytes are returned as they are, without a copy).
pub fn decode(raw: Vec<u8>) -> Result<Vec<u8>, Problem> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        if raw.len() > MAX_BYTES {
            return Err(too_large());
        }
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(MAX_BYTES));
    match GzDecoder::new(&raw[..])
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut out)
    {
        Ok(_) if out.len() > MAX_BYTES => Err(too_large()),
        Ok(_) => Ok(out),
        Err(e) => Err(format!(
            "is a truncated or corrupt gzip file ({e}); delete it and fetch the data set again"
        )),
    }
}

fn too_large() -> Problem {
    format!(
        "holds more than {} MiB of data, far more than any Fashion-MNIST file; is it the right file?",
        MAX_BYTES >> 20
    )
}

/// Checks the magic number and that the size matches the header; returns the dimensions.
fn header(bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, Problem> {
    let len = 4 + 4 * dims;
    if bytes.len() < len {
        return Err(format!(
            "is too short for an IDX header ({} bytes); the file is truncated",
            bytes.len()
        ));
    }
    let word = |i: usize| {
        let b = &bytes[4 * i..4 * i + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    };
    let found = word(0);
    if found != magic {
        return Err(format!(
            "has magic number 0x{found:08x}, expected 0x{magic:08x} ({}); is it the right file?",
            if magic == IMAGES_MAGIC {
                "IDX images"
            } else {
                "IDX labels"
            }
        ));
    }
    let dims: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    // In u128: three u32 dimensions cannot overflow it (they can overflow usize).
    let expected = len as u128 + dims.iter().map(|&d| d as u128).product::<u128>();
    if bytes.len() as u128 != expected {
        return Err(format!(
            "holds {} bytes but its header {dims:?} announces {expected}; the file is truncated or corrupt",
            bytes.len()
        ));
    }
    Ok(dims)
}

/// 28×28 images of a decoded file: the count and `count × 784` bytes, row after row.
pub fn parse_images(bytes: &[u8]) -> Result<(usize, &[u8]), Problem> {
    let dims = header(bytes, IMAGES_MAGIC, 3)?;
    if dims[1] != ROWS || dims[2] != COLS {
        return Err(format!(
            "holds {}×{} images, expected {ROWS}×{COLS}",
            dims[1], dims[2]
        ));
    }
    Ok((dims[0], &bytes[16..]))
}

/// Labels 0–9 of a decoded file.
pub fn parse_labels(bytes: &[u8]) -> Result<&[u8], Problem> {
    header(bytes, LABELS_MAGIC, 1)?;
    let labels = &bytes[8..];
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= CLASSES) {
        return Err(format!(
            "has label {l} at index {i}, which is not a class 0–{}",
            CLASSES - 1
        ));
    }
    Ok(labels)
}

fn named(path: &Path) -> impl Fn(Problem) -> anyhow::Error + '_ {
    move |problem| anyhow::anyhow!("'{}' {problem}", path.display())
}

/// Reads and decodes a whole file; one larger than [`MAX_BYTES`] is refused by its size
/// before it is read (a multi-gigabyte file, sparse or not, never reaches memory).
pub fn read_maybe_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot read '{}': {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if size > MAX_BYTES as u64 {
        return Err(named(path)(too_large()));
    }
    let mut raw = Vec::with_capacity(size as usize);
    // At most one byte past the limit: a file that grows while it is read is caught too.
    file.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(cannot)?;
    decode(raw).map_err(named(path))
}

/// 28×28 images as `count × 784` bytes, row after row.
pub fn read_images(path: &Path) -> anyhow::Result<(usize, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let (n, pixels) = parse_images(&bytes).map_err(named(path))?;
    Ok((n, pixels.to_vec()))
}

/// Labels 0–9.
pub fn read_labels(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    Ok(parse_labels(&bytes).map_err(named(path))?.to_vec())
}

/// Images and labels of one split; both files must hold the same number of examples.
pub fn read_split(images: &Path, labels: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (n, pixels) = read_images(images)?;
    let labels_v = read_labels(labels)?;
    if n != labels_v.len() {
        anyhow::bail!(
            "'{}' holds {n} images but '{}' holds {} labels; the two files must belong together",
            images.display(),
            labels.display(),
            labels_v.len()
        );
    }
    Ok((pixels, labels_v))
}

/// The fuzz target's oracle (`fuzz/fuzz_targets/idx.rs`), also replayed by the tests on every
/// crash the fuzzer ever found: the first byte of `data` picks how the rest is read (as given,
/// or gzip-compressed first, so well-formed gzip around any IDX body is explored too); any
/// input must give a value or an error, and every value must keep the reader's promises.
///
/// # Panics
/// When an accepted input breaks one: more than [`MAX_BYTES`] decoded, a pixel count other
/// than n·784, a count other than the header's, a label outside 0–9.
pub fn check_any_input(data: &[u8]) {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let bytes = if how % 2 == 0 {
        rest.to_vec()
    } else {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).expect("compressing into memory");
        gz.finish().expect("compressing into memory")
    };
    let Ok(decoded) = decode(bytes) else {
        return;
    };
    assert!(
        decoded.len() <= MAX_BYTES,
        "{} bytes decoded",
        decoded.len()
    );
    let header_count = |bytes: &[u8]| u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if let Ok((n, pixels)) = parse_images(&decoded) {
        assert_eq!(n, header_count(&decoded) as usize, "image count");
        assert_eq!(Some(pixels.len()), n.checked_mul(ROWS * COLS), "pixels");
    }
    if let Ok(labels) = parse_labels(&decoded) {
        assert_eq!(labels.len(), header_count(&decoded) as usize, "label count");
        assert!(labels.iter().all(|&l| l < CLASSES), "labels 0–9");
    }
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
