//! Outgoing mail (login-change codes, password-reset links), sent through the mail layer's
//! [`Sender`] to the relay in identity's SMTP settings.

use lettre::message::Mailbox;
use mailroom_mail::smtp::{Sender, SmtpSettings};

use crate::domain::EmailAddress;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SMTP settings are invalid: {0}")]
    Config(String),
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("the SMTP server did not accept the message: {0}")]
    Send(String),
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

    /// Sends the code that confirms a login change to the new address.
    pub async fn send_login_code(
        &self,
        to: &EmailAddress,
        code: &str,
        ttl_minutes: i64,
    ) -> Result<(), MailError> {
        self.send(
            to,
            "Confirm your new Mailroom sign-in address",
            format!(
                "Someone (we hope you) asked to sign in to Mailroom with this address.\n\n\
                 Your confirmation code: {code}\n\n\
                 It expires in {ttl_minutes} minutes. If this was not you, ignore this message.\n"
            ),
        )
        .await
    }

    /// Sends a one-time link to choose a new password.
    pub async fn send_password_reset(
        &self,
        to: &EmailAddress,
        organisation: &str,
        link: &str,
        ttl_minutes: i64,
    ) -> Result<(), MailError> {
        self.send(
            to,
            "Choose a new Mailroom password",
            format!(
                "A new password was asked for your Mailroom account at {organisation}.\n\n\
                 Choose it here (the link works once):\n{link}\n\n\
                 It expires in {ttl_minutes} minutes. If you did not ask for this, ignore this message: \
                 your password stays as it is.\n"
            ),
        )
        .await
    }

    async fn send(&self, to: &EmailAddress, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to
            .as_str()
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
        let message = self
            .sender
            .message()
            .to(to)
            .subject(subject)
            // A complete MIME part (MIME-Version, charset, transfer encoding), as invitations'.
            .singlepart(
                lettre::message::SinglePart::builder()
                    .header(lettre::message::header::ContentType::TEXT_PLAIN)
                    .body(body),
            )
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.sender
            .send(message)
            .await
            .map_err(|e| MailError::Send(e.to_string()))
    }
}
