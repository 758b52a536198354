//! Any bytes, raw or gzip, through the IDX reader: it must return a value or an error, never
//! panic, hang or exhaust memory. Run with `scripts/fuzz.sh` (see the README).
#![no_main]

#[path = "../../src/data/idx.rs"]
#[allow(dead_code)]
mod idx;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the rest is read, so both paths see every kind of input.
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let bytes = match how % 2 {
        // As given: raw IDX, or gzip when it starts with the signature.
        0 => rest.to_vec(),
        // Compress the input so the fuzzer also explores well-formed gzip around any IDX body.
        _ => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(rest).unwrap();
            gz.finish().unwrap()
        }
    };
    let Ok(decoded) = idx::decode(bytes) else {
        return;
    };
    if let Ok((n, pixels)) = idx::parse_images(&decoded) {
        assert_eq!(pixels.len(), n * idx::ROWS * idx::COLS);
    }
    if let Ok(labels) = idx::parse_labels(&decoded) {
        assert!(labels.iter().all(|&l| l < idx::CLASSES));
    }
});
