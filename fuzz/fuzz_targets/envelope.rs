//! cargo-fuzz entry for `mailroom_fuzz_targets::envelope` (what it asserts is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailroom_fuzz_targets::envelope(data));
