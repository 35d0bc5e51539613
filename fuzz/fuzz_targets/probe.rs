#![no_main]
use std::time::Instant;
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {
    for pat in [&b"aaaaaaa"[..], b"=?utf-8?Q?a?= =?utf-8?Q?b?=", b"=?a?b?c", b"=?=?", b"=?utf-8?B?", b"=?utf-8?Q?a b?= "] {
        let mut line = format!("{:?}:", String::from_utf8_lossy(pat));
        for kib in [4usize, 8, 16, 32, 64, 128, 256] {
            let input = pat.repeat(kib * 1024 / pat.len());
            let t = (0..7).map(|_| { let s = Instant::now(); std::hint::black_box(mailroom_sync::envelope::decode_words(&input)); s.elapsed() }).min().unwrap();
            line += &format!(" {kib}K={:.0}ns/B", t.as_nanos() as f64 / input.len() as f64);
        }
        println!("{line}");
    }
});
