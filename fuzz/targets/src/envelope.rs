//! Any bytes as a header a mail server sends: RFC 2047 encoded words
//! (`mailroom_sync::envelope::decode_words`), an IMAP `FETCH (ENVELOPE …)` response as
//! async-imap parses it and the sync stores it ([`StoredEnvelope`]), and the stored form read
//! back.
//!
//! Asserted: decoded text has no control character and no more characters than the header had
//! bytes (decoding never amplifies); text without encoded words comes back as it was; text
//! encoded as words (base64 and quoted-printable, split across words) decodes to itself;
//! decoding is linear — eight times the input takes well under the 64 times a rescan per
//! encoded word would (issue 20, item 2); a stored envelope keeps within its bounds (subject,
//! names, addresses, Message-ID), shows no control character, and reads back equal.

use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::Instant;

use async_imap::imap_proto::{AttributeValue, Response};
use base64::Engine as _;
use mailroom_sync::envelope::{decode_words, StoredEnvelope};

use crate::split_two;

pub fn envelope(data: &[u8]) {
    words(data);
    round_trip(data);
    imap_envelope(data);
    stored(data);
    linear(data);
}

fn words(raw: &[u8]) {
    let out = decode_words(raw);
    assert!(
        !out.chars().any(char::is_control),
        "a control character passed: {out:?}"
    );
    assert!(
        out.chars().count() <= raw.len(),
        "{} bytes decoded to {} characters",
        raw.len(),
        out.chars().count()
    );
    if let Ok(text) = std::str::from_utf8(raw) {
        if !text.contains("=?") && !text.chars().any(char::is_control) {
            assert_eq!(out, text, "text without encoded words was changed");
        }
    }
}

/// The fuzzer's text, encoded as RFC 2047 words the way mail clients write them, decodes back.
fn round_trip(data: &[u8]) {
    let (first, second) = split_two(data);
    // Without byte-order marks: one starting a word is the charset's, not text, and is dropped.
    let plain = |bytes: &[u8]| -> String {
        String::from_utf8_lossy(bytes)
            .chars()
            .filter(|c| *c != '\u{feff}')
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let (first, second) = (plain(first), plain(second));
    // Words short enough for RFC 2047's 75 characters, cut at character boundaries.
    let b_words = chunks(&first, 30).map(|chunk| {
        format!(
            "=?utf-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        )
    });
    let q_words = chunks(&second, 20).map(|chunk| {
        let payload: String = chunk.bytes().map(|b| format!("={b:02X}")).collect();
        format!("=?UTF-8?q?{payload}?=")
    });
    // Between words, white space of any kind is not part of the text.
    let encoded: Vec<String> = b_words.chain(q_words).collect();
    let mut header = String::from("Re: ");
    for (n, word) in encoded.iter().enumerate() {
        if n > 0 {
            header.push_str(if n % 2 == 0 { " " } else { "\r\n\t" });
        }
        header.push_str(word);
    }
    let decoded = decode_words(header.as_bytes());
    let expected = format!("Re: {first}{second}");
    assert_eq!(
        decoded, expected,
        "encoded words did not decode back: {header:?}"
    );
}

/// `text` in pieces of at most `max` bytes, each ending at a character boundary.
fn chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // One character longer than `max` (not for max >= 4).
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

fn imap_envelope(data: &[u8]) {
    let mut wrapped = b"* 1 FETCH (ENVELOPE ".to_vec();
    wrapped.extend_from_slice(data);
    wrapped.extend_from_slice(b")\r\n");
    for response in [data, &wrapped[..]] {
        let Ok((_, Response::Fetch(_, attributes))) = Response::parse(response) else {
            continue;
        };
        for attribute in &attributes {
            if let AttributeValue::Envelope(envelope) = attribute {
                check_stored(&StoredEnvelope::from_imap(Some(envelope)));
            }
        }
    }
}

fn check_stored(env: &StoredEnvelope) {
    let within = |what: &str, text: &str, max: usize| {
        assert!(
            text.chars().count() <= max,
            "{what} of {} characters kept (at most {max})",
            text.chars().count()
        );
        assert!(
            !text.chars().any(char::is_control),
            "{what} keeps a control character from the server: {text:?}"
        );
    };
    within("a subject", &env.subject, 512);
    within("a Message-ID", &env.message_id, 256);
    for list in [&env.from, &env.to] {
        assert!(list.len() <= 32, "{} addresses kept", list.len());
        for address in list {
            within("a name", &address.name, 256);
            within("an address", &address.email, 320);
        }
    }
    assert_eq!(&StoredEnvelope::decode_stored(&env.encode()), env);
}

fn stored(data: &[u8]) {
    let env = StoredEnvelope::decode_stored(data);
    assert_eq!(StoredEnvelope::decode_stored(&env.encode()), env);
}

/// The short input is the fuzzer's (at most [`LINEAR_UNIT`] bytes of it) repeated to
/// [`LINEAR_BASE`] bytes; the long one is [`LINEAR_FACTOR`] short ones.
const LINEAR_UNIT: usize = 512;
const LINEAR_BASE: usize = 512;
const LINEAR_FACTOR: u32 = 8;
/// Below this the long input took too little time to judge.
const LINEAR_FLOOR: Duration = Duration::from_micros(200);

/// Eight times the input must cost about eight times the time, not 64: a decoder that
/// rescans the rest of the text for every `=?` is quadratic. Time is the thread's CPU time,
/// so other processes and preemption do not count: a linear decoder measures 8 times, the one
/// before issue 20 took 36 to 46 times (in a debug build) for eight times `=?x`, `=?a?b?c`
/// or `=?a?b? `. A ratio past three times linear is measured again, the
/// least of three runs each, and fails if it stays.
fn linear(data: &[u8]) {
    let unit = &data[..data.len().min(LINEAR_UNIT)];
    if unit.is_empty() || !unit.windows(2).any(|w| w == b"=?") {
        return;
    }
    let short = unit.repeat(LINEAR_BASE.div_ceil(unit.len()));
    let long = short.repeat(LINEAR_FACTOR as usize);
    let measure = |runs: u32| {
        let (mut short_time, mut long_time) = (Duration::MAX, Duration::MAX);
        for _ in 0..runs {
            short_time = short_time.min(cpu_time(|| decode_words(&short)));
            long_time = long_time.min(cpu_time(|| decode_words(&long)));
        }
        (short_time, long_time)
    };
    let linear_enough = |(short_time, long_time): (Duration, Duration)| {
        long_time <= LINEAR_FLOOR || long_time <= short_time * (3 * LINEAR_FACTOR)
    };
    if linear_enough(measure(1)) {
        return;
    }
    let (short_time, long_time) = measure(3);
    assert!(
        linear_enough((short_time, long_time)),
        "decoding is not linear: {} bytes took {long_time:?}, {} bytes {short_time:?} \
         ({:.0} times for {LINEAR_FACTOR} times the input)",
        long.len(),
        short.len(),
        long_time.as_secs_f64() / short_time.as_secs_f64().max(1e-9),
    );
}

/// The CPU time this thread spent running `work`.
fn cpu_time<T>(work: impl FnOnce() -> T) -> Duration {
    let started = thread_cpu_time();
    std::hint::black_box(work());
    thread_cpu_time().saturating_sub(started)
}

#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; the clock id is a
    // constant every Linux has.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Elsewhere, wall time since the first call (noisier).
#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}
