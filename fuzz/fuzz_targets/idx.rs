//! Any bytes, raw or gzip, through the IDX reader: it must return a value or an error, never
//! panic, hang or exhaust memory, and every value must keep the reader's promises (the oracle
//! is `idx::check_any_input`, which the tests also replay). Run with `scripts/fuzz.sh`.
#![no_main]

#[path = "../../src/data/idx.rs"]
#[allow(dead_code)]
mod idx;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| idx::check_any_input(data));
