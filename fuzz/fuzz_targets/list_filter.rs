//! cargo-fuzz entry for `mailroom_fuzz_targets::list_filter` (what it asserts is documented there).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailroom_fuzz_targets::list_filter(data));
