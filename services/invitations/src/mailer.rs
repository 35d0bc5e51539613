//! Invitation mail over SMTP: the mail layer's pooled [`Sender`], so a batch of a thousand
//! invitations reuses a handful of connections, and each failure classified as the server
//! meant it — permanent (a 5xx: the address is refused, retrying will not help) or transient
//! (a 4xx, a refused connection, a timeout: try again later).

use lettre::message::{header::ContentType, Mailbox};
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

    /// Sends one plain-text UTF-8 mail. Headers with non-ASCII text are RFC 2047 encoded by
    /// lettre; the body goes as quoted-printable or base64 as its bytes need.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| {
            MailError::Permanent(format!("the address cannot be mailed: {e}"))
        })?;
        let message = self
            .sender
            .message()
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Permanent(format!("the message could not be built: {e}")))?;
        match self.sender.send(message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(MailError::Permanent(describe(&err))),
            Err(err) => Err(MailError::Transient(describe(&err))),
        }
    }
}

/// The server's answer (or the connection problem) in one line, without lettre's debug noise.
fn describe(err: &lettre::transport::smtp::Error) -> String {
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
