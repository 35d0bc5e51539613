//! A message's envelope as the index keeps it: subject, senders, recipients and Message-ID,
//! decoded from IMAP's ENVELOPE (RFC 2047 encoded words in any charset `encoding_rs` knows),
//! bounded in size, and stored as a small protobuf the database never looks into.
//!
//! Invariant: decoding takes time linear in what it is given (each byte is looked at a
//! bounded number of times, however many `=?` an unterminated word hides), and only the first
//! [`MAX_RAW_BYTES`] of any one field are looked at (a 5 MB subject costs no more than a long
//! one).

use base64::Engine as _;
use mailroom_platform::proto::events::v1 as ev;
use prost::Message as _;

/// Longest subject kept, in characters.
const MAX_SUBJECT: usize = 512;
/// Most addresses kept per field.
const MAX_ADDRESSES: usize = 32;
/// Most bytes of one field decoded: far more than the characters kept need, however encoded.
pub const MAX_RAW_BYTES: usize = 16 * 1024;

/// The first [`MAX_RAW_BYTES`] of a field.
fn head(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(MAX_RAW_BYTES)]
}

/// The stored envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEnvelope {
    #[prost(string, tag = "1")]
    pub subject: String,
    #[prost(message, repeated, tag = "2")]
    pub from: Vec<ev::MessageAddress>,
    #[prost(message, repeated, tag = "3")]
    pub to: Vec<ev::MessageAddress>,
    #[prost(string, tag = "4")]
    pub message_id: String,
}

impl StoredEnvelope {
    pub fn from_imap(envelope: Option<&async_imap::imap_proto::Envelope<'_>>) -> Self {
        let Some(env) = envelope else {
            return Self::default();
        };
        Self {
            subject: truncate(
                env.subject
                    .as_deref()
                    .map(|s| decode_words(head(s)))
                    .unwrap_or_default(),
                MAX_SUBJECT,
            ),
            from: addresses(env.from.as_deref()),
            to: addresses(env.to.as_deref()),
            message_id: env
                .message_id
                .as_deref()
                .map(|m| truncate(String::from_utf8_lossy(head(m)).into_owned(), 256))
                .unwrap_or_default(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// A stored envelope; one that cannot be read shows as empty rather than failing a list.
    pub fn decode_stored(bytes: &[u8]) -> Self {
        <Self as prost::Message>::decode(bytes).unwrap_or_default()
    }
}

fn addresses(list: Option<&[async_imap::imap_proto::Address<'_>]>) -> Vec<ev::MessageAddress> {
    let Some(list) = list else {
        return Vec::new();
    };
    list.iter()
        // Group syntax shows as addresses without a host: leave the markers out.
        .filter(|a| a.host.is_some() && a.mailbox.is_some())
        .take(MAX_ADDRESSES)
        .map(|a| {
            let mailbox = String::from_utf8_lossy(head(a.mailbox.as_deref().unwrap_or_default()));
            let host = String::from_utf8_lossy(head(a.host.as_deref().unwrap_or_default()));
            ev::MessageAddress {
                name: truncate(
                    a.name
                        .as_deref()
                        .map(|n| decode_words(head(n)))
                        .unwrap_or_default(),
                    256,
                ),
                email: truncate(format!("{mailbox}@{host}"), 320),
            }
        })
        .collect()
}

/// The first `max` characters of `text` (kept as it is when no longer).
fn truncate(mut text: String, max: usize) -> String {
    // No more bytes than `max`: no more characters either.
    if text.len() > max {
        if let Some((at, _)) = text.char_indices().nth(max) {
            text.truncate(at);
        }
    }
    text
}

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?text?=`) in a header value; text around
/// them is taken as UTF-8 (lossily), whitespace between two encoded words is dropped, and an
/// encoded word that cannot be decoded is kept as written. Control characters become spaces.
/// Linear in `raw`'s length (see the module's invariant).
pub fn decode_words(raw: &[u8]) -> String {
    // Most values are plain text: no encoded word and no control character to replace.
    if let Ok(plain) = std::str::from_utf8(raw) {
        if !plain.contains("=?") && !plain.chars().any(char::is_control) {
            return plain.to_owned();
        }
    }
    let text = String::from_utf8_lossy(raw);
    let bytes = text.as_bytes();
    let mut words = Words {
        text: &text,
        starts: Finder::new(bytes, b"=?"),
        charset_ends: Finder::new(bytes, b"?"),
        encoding_ends: Finder::new(bytes, b"?"),
        text_qmarks: Finder::new(bytes, b"?"),
        ends: Finder::new(bytes, b"?="),
        spaces: Finder::new(bytes, b" "),
    };
    let mut out = String::with_capacity(text.len());
    // `text[..written]` is decided; the next word is looked for from `from`.
    let mut written = 0;
    let mut last_was_word = false;
    while let Some(start) = words.starts.find(written) {
        let before = &text[written..start];
        match words.word_at(start) {
            Some((decoded, end)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                written = end;
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                written = start + 2;
                last_was_word = false;
            }
        }
    }
    out.push_str(&text[written..]);
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first occurrence of a needle at or after a position. Asked at positions that never
/// decrease (as [`Words`] asks), each byte is scanned about once in all.
struct Finder<'a> {
    hay: &'a [u8],
    needle: &'static [u8],
    /// The last question and its answer: no occurrence lies in `asked..answer`.
    asked: usize,
    answer: Option<usize>,
    fresh: bool,
}

impl<'a> Finder<'a> {
    fn new(hay: &'a [u8], needle: &'static [u8]) -> Self {
        Self {
            hay,
            needle,
            asked: 0,
            answer: None,
            fresh: true,
        }
    }

    fn find(&mut self, at: usize) -> Option<usize> {
        let known = !self.fresh && at >= self.asked && self.answer.is_none_or(|a| a >= at);
        if !known {
            self.answer = self
                .hay
                .get(at..)
                .and_then(|rest| {
                    rest.windows(self.needle.len())
                        .position(|w| w == self.needle)
                })
                .map(|i| at + i);
            self.asked = at;
            self.fresh = false;
        }
        self.answer
    }
}

/// The finders of one text's encoded words, each asked at non-decreasing positions.
struct Words<'a> {
    text: &'a str,
    starts: Finder<'a>,
    charset_ends: Finder<'a>,
    encoding_ends: Finder<'a>,
    text_qmarks: Finder<'a>,
    ends: Finder<'a>,
    spaces: Finder<'a>,
}

impl Words<'_> {
    /// The encoded word at `start` (which holds `=?`): its text and where it ends. Its
    /// encoded text holds no `?` and no space, so no byte is inside more than a few
    /// candidates' spans.
    fn word_at(&mut self, start: usize) -> Option<(String, usize)> {
        let q1 = self.charset_ends.find(start + 2)?;
        let q2 = self.encoding_ends.find(q1 + 1)?;
        let end = self.ends.find(q2 + 1)?;
        if self.text_qmarks.find(q2 + 1) != Some(end)
            || self.spaces.find(q2 + 1).is_some_and(|sp| sp < end)
        {
            return None;
        }
        let charset = &self.text[start + 2..q1];
        // RFC 2231 language suffix: `utf-8*en`.
        let charset = charset.split('*').next().unwrap_or(charset);
        let encoding = encoding_rs::Encoding::for_label(charset.as_bytes())?;
        let payload = &self.text[q2 + 1..end];
        let bytes = match &self.text[q1 + 1..q2] {
            "B" | "b" => base64::engine::general_purpose::STANDARD
                .decode(payload.trim_end_matches('='))
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(payload.trim_end_matches('='))
                })
                .ok()?,
            "Q" | "q" => decode_q(payload)?,
            _ => return None,
        };
        let (decoded, _, _) = encoding.decode(&bytes);
        Some((decoded.into_owned(), end + 2))
    }
}

fn decode_q(payload: &str) -> Option<Vec<u8>> {
    let bytes = payload.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = payload.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words_in_several_charsets() {
        assert_eq!(decode_words(b"plain subject"), "plain subject");
        assert_eq!(
            decode_words("=?UTF-8?B?0J/RgNC40LLQtdGC?=".as_bytes()),
            "Привет"
        );
        assert_eq!(
            decode_words(b"=?iso-8859-1?Q?Caf=E9_cr=E8me?= today"),
            "Café crème today"
        );
        // Whitespace between adjacent encoded words is not part of the text.
        assert_eq!(decode_words(b"=?utf-8?Q?a?= =?utf-8?Q?b?="), "ab");
        assert_eq!(decode_words("=?koi8-r?B?8NLJ18XU?=".as_bytes()), "Привет");
    }

    #[test]
    fn broken_words_are_kept_and_controls_removed() {
        assert_eq!(decode_words(b"=?bogus?B?AAA?= x"), "=?bogus?B?AAA?= x");
        assert_eq!(decode_words(b"=?utf-8?Q?bad=ZZ?="), "=?utf-8?Q?bad=ZZ?=");
        assert_eq!(decode_words(b"a\r\nb"), "a  b");
    }

    #[test]
    fn a_megabyte_of_unterminated_words_decodes_in_linear_time() {
        // One `=?` every four bytes and no `?=` anywhere: each candidate word once made the
        // decoder look to the end of the text for its end (about 10^11 byte steps here).
        let mut raw = b"=?utf-8?q?".to_vec();
        while raw.len() < 1024 * 1024 {
            raw.extend_from_slice(b"a=?b");
        }
        let started = std::time::Instant::now();
        let decoded = decode_words(&raw);
        let took = started.elapsed();
        assert_eq!(decoded.len(), raw.len(), "kept as written");
        // Linear is milliseconds; the quadratic decoder took minutes. The bound is far from
        // both, so a debug build on a loaded two-core CI machine (543 ms once) stays clear.
        let bound = std::time::Duration::from_secs(5);
        assert!(took < bound, "{took:?}");
        // Candidates that do reach a `?=` far away, with `?` in between, are no slower.
        let mut raw = Vec::new();
        while raw.len() < 1024 * 1024 {
            raw.extend_from_slice(b"=?utf-8?b?QUFB");
        }
        raw.extend_from_slice(b"?=");
        let started = std::time::Instant::now();
        decode_words(&raw);
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    }

    #[test]
    fn the_stored_form_round_trips() {
        let env = StoredEnvelope {
            subject: "Quarterly report".into(),
            from: vec![ev::MessageAddress {
                name: "Olivia Chen".into(),
                email: "olivia.chen@acme.test".into(),
            }],
            to: Vec::new(),
            message_id: "<1@acme.test>".into(),
        };
        assert_eq!(StoredEnvelope::decode_stored(&env.encode()), env);
        assert_eq!(
            StoredEnvelope::decode_stored(b"\xff\xff"),
            StoredEnvelope::default()
        );
    }
}
