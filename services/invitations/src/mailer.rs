//! Invitation mail over SMTP: the mail layer's pooled [`Sender`], so a batch of a thousand
//! invitations reuses a handful of connections, and each failure classified as the server
//! meant it — permanent (a 5xx: the address is refused, retrying will not help; or an address
//! the relay cannot take at all) or transient (a 4xx, a refused connection, a timeout: try
//! again later).
//!
//! Each message is complete as large providers expect it (RFC 5322, RFC 2045): `Date`,
//! `Message-ID` in the sender's domain, `MIME-Version`, `Content-Type: text/plain;
//! charset=utf-8` and the `Content-Transfer-Encoding` its body needs. The subject is shown as
//! written: text in it that looks like an RFC 2047 encoded word (an inviter named
//! `=?utf-8?q?…?=`) is encoded itself, so no mail reader decodes it into other characters.

use base64::Engine;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, SinglePart};
use lettre::Message;
use mailroom_mail::smtp::{Sender, SmtpSettings};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SMTP settings are invalid: {0}")]
    Config(String),
    /// The server refused for good; the text is its answer.
    #[error("{0}")]
    Permanent(String),
    /// Worth another try later.
    #[error("{0}")]
    Transient(String),
}

#[derive(Clone)]
pub struct Mailer {
    sender: Sender,
}

impl Mailer {
    pub fn new(config: &SmtpSettings) -> Result<Self, MailError> {
        let sender = config
            .sender()
            .map_err(|e| MailError::Config(e.to_string()))?;
        Ok(Self { sender })
    }

    /// Sends one plain-text UTF-8 mail ([`Self::compose`]).
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let message = self.compose(to, subject, body)?;
        match self.sender.send(message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(MailError::Permanent(describe(&err))),
            // lettre itself refuses, before any command, to give an address with non-ASCII
            // characters to a relay that does not offer SMTPUTF8: no retry changes that.
            Err(err) if err.is_client() && !to.is_ascii() => Err(MailError::Permanent(format!(
                "the mail server cannot deliver to an address with non-ASCII characters before the @ (it does not offer SMTPUTF8): {}",
                describe(&err)
            ))),
            Err(err) => Err(MailError::Transient(describe(&err))),
        }
    }

    /// The complete message to `to`: headers as the module docs list them, the body as
    /// `text/plain; charset=utf-8` in 7bit, quoted-printable or base64 as its bytes need.
    pub fn compose(&self, to: &str, subject: &str, body: String) -> Result<Message, MailError> {
        let to: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| {
            MailError::Permanent(format!("the address cannot be mailed: {e}"))
        })?;
        // The sender's builder carries the `Message-ID` (in the sender's domain).
        let builder = self.sender.message().to(to);
        // lettre encodes (RFC 2047) only words that are not ASCII, and would pass an ASCII
        // word such as `=?utf-8?q?=0D=0A?=` through for the reader to decode: a subject
        // holding `=?` is encoded whole here.
        let builder = if subject.contains("=?") {
            builder.raw_header(HeaderValue::dangerous_new_pre_encoded(
                HeaderName::new_from_ascii_str("Subject"),
                subject.to_owned(),
                encoded_words(subject),
            ))
        } else {
            builder.subject(subject)
        };
        builder
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(body),
            )
            .map_err(|e| MailError::Permanent(format!("the message could not be built: {e}")))
    }
}

/// `text` as RFC 2047 `B` encoded words of UTF-8, each at most 75 characters and holding
/// whole characters, folded onto continuation lines.
fn encoded_words(text: &str) -> String {
    // 39 bytes are 52 base64 characters: a word of 64, a line of at most 73 with "Subject: ".
    const CHUNK: usize = 39;
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (at, c) in text.char_indices() {
        if at + c.len_utf8() - start > CHUNK {
            words.push(&text[start..end]);
            start = at;
        }
        end = at + c.len_utf8();
    }
    if start < text.len() {
        words.push(&text[start..]);
    }
    words
        .into_iter()
        .map(|w| {
            format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// The server's answer (or the connection problem) in one line, without lettre's debug noise.
fn describe(err: &mailroom_mail::smtp::SendError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn mailer() -> Mailer {
        Mailer::new(&SmtpSettings::default()).expect("default settings")
    }

    fn decoded(encoded: &str) -> String {
        let mut bytes = Vec::new();
        for word in encoded.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
            let b64 = word
                .strip_prefix("=?utf-8?b?")
                .and_then(|w| w.strip_suffix("?="))
                .expect("an encoded word");
            bytes.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            );
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn encoded_words_keep_characters_whole_and_lines_short() {
        let text = "=?utf-8?q?Ann?= Лиса приглашает вас в Acme, 😀 и ещё немного текста";
        assert_eq!(decoded(&encoded_words(text)), text);
        assert_eq!(decoded(&encoded_words("=?")), "=?");
    }

    // A pooled transport needs the runtime it spawns its pool on, even to be dropped.
    #[tokio::test]
    async fn messages_are_complete_and_a_look_alike_encoded_word_stays_literal() {
        let message = mailer()
            .compose(
                "ann@x.test",
                "=?utf-8?q?Ann=0D=0ABcc:_x@y.test?= invites you",
                "Hello,\nthe link: https://a.test/invite?token=abc\n".into(),
            )
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let headers = text.split("\r\n\r\n").next().unwrap();
        for wanted in [
            "Date: ",
            "Message-ID: <",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: ",
            "Subject: =?utf-8?b?",
        ] {
            assert_eq!(headers.matches(wanted).count(), 1, "{wanted}: {headers}");
        }
        assert!(headers.contains("@mailroom.local>"), "{headers}");
        assert!(!headers.contains("=?utf-8?q?"), "{headers}");
    }

    #[tokio::test]
    async fn an_ordinary_subject_is_left_to_lettre() {
        let message = mailer()
            .compose("ann@x.test", "Ann invites you", "Hi".into())
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("Subject: Ann invites you\r\n"), "{text}");
    }
}
