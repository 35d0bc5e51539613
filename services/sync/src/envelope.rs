//! A message's envelope as the index keeps it: subject, senders, recipients and Message-ID,
//! decoded from IMAP's ENVELOPE (RFC 2047 encoded words in any charset `encoding_rs` knows),
//! bounded in size, and stored as a small protobuf the database never looks into.

use base64::Engine as _;
use mailroom_platform::proto::events::v1 as ev;
use prost::Message as _;

/// Longest subject kept, in characters.
const MAX_SUBJECT: usize = 512;
/// Most addresses kept per field.
const MAX_ADDRESSES: usize = 32;

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
                &env.subject.as_deref().map(decode_words).unwrap_or_default(),
                MAX_SUBJECT,
            ),
            from: addresses(env.from.as_deref()),
            to: addresses(env.to.as_deref()),
            message_id: env
                .message_id
                .as_deref()
                .map(|m| truncate(&String::from_utf8_lossy(m), 256))
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
            let mailbox = String::from_utf8_lossy(a.mailbox.as_deref().unwrap_or_default());
            let host = String::from_utf8_lossy(a.host.as_deref().unwrap_or_default());
            ev::MessageAddress {
                name: truncate(
                    &a.name.as_deref().map(decode_words).unwrap_or_default(),
                    256,
                ),
                email: truncate(&format!("{mailbox}@{host}"), 320),
            }
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?text?=`) in a header value; text around
/// them is taken as UTF-8 (lossily), whitespace between two encoded words is dropped, and an
/// encoded word that cannot be decoded is kept as written. Control characters become spaces.
pub fn decode_words(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match decode_one(candidate) {
            Some((decoded, used)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One encoded word at the start of `s`: its text and how many bytes it took.
fn decode_one(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = &body[..q1];
    // RFC 2231 language suffix: `utf-8*en`.
    let charset = charset.split('*').next().unwrap_or(charset);
    let after = &body[q1 + 1..];
    let (encoding, tail) = after.split_once('?')?;
    let end = tail.find("?=")?;
    let payload = &tail[..end];
    if payload.contains(' ') {
        return None;
    }
    let bytes = match encoding {
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
    let encoding = encoding_rs::Encoding::for_label(charset.as_bytes())?;
    let (decoded, _, _) = encoding.decode(&bytes);
    let used = 2 + q1 + 1 + 2 + end + 2;
    Some((decoded.into_owned(), used))
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
