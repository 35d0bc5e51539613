//! The bodies of Mailroom's fuzz targets: one function per target, taking the fuzzer's bytes
//! and asserting what must hold of Mailroom's handling of hostile input (panicking when it does
//! not), beyond "it did not crash" wherever a property can be stated.
//!
//! Two things run them. cargo-fuzz (`fuzz/fuzz_targets/*.rs`, nightly, coverage-guided) calls
//! each on generated inputs; the replay test (`tests/replay.rs`, stable, in CI) calls each on
//! every file of its committed corpus (`fuzz/corpus/<target>/`) and of
//! `fuzz/artifacts/<target>/` when that exists, so an input that once failed stays fixed.
//!
//! | target | what is fuzzed |
//! |---|---|
//! | [`list_filter`] | the AIP-160 filter parsers and the mailbox list's SQL rendering |
//! | [`address`] | addresses, domains, hosts and one-line names as callers type them |
//! | [`envelope`] | RFC 2047 encoded words and the IMAP ENVELOPE the sync stores |
//! | [`page_token`] | signed (and legacy unsigned) page tokens a caller sends back |
//! | [`imap_guard`] | the bounded reader between a mail server and async-imap |

pub mod address;
pub mod envelope;
pub mod imap_guard;
pub mod list_filter;
pub mod page_token;

pub use address::address;
pub use envelope::envelope;
pub use imap_guard::imap_guard;
pub use list_filter::list_filter;
pub use page_token::page_token;

/// A target's body: the fuzzer's bytes in, a panic when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target by its cargo-fuzz name (the corpus directory's name).
pub const TARGETS: [(&str, Target); 5] = [
    ("list_filter", list_filter),
    ("address", address),
    ("envelope", envelope),
    ("page_token", page_token),
    ("imap_guard", imap_guard),
];

/// Splits fuzzer bytes into two parts at a point the first byte chooses (so the fuzzer can
/// move the boundary), for targets that take two inputs.
pub(crate) fn split_two(data: &[u8]) -> (&[u8], &[u8]) {
    match data.split_first() {
        Some((&at, rest)) => rest.split_at(usize::from(at).min(rest.len())),
        None => (&[], &[]),
    }
}

/// Text an error may show a person: bounded, and with no control character (so a caller's
/// input cannot put escape sequences or line breaks into a status, log line or terminal).
pub(crate) fn assert_shown_safely(message: &str, max_chars: usize, input: &str) {
    assert!(
        message.chars().count() <= max_chars,
        "an error message of {} characters (more than {max_chars}) for {} bytes of input: {message:?}",
        message.chars().count(),
        input.len()
    );
    assert!(
        !message.chars().any(char::is_control),
        "an error message carries a control character: {message:?}"
    );
}
