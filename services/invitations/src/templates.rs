//! The words of the mail: shipped texts in English and Russian, an organisation's own wording of
//! the invitation, placeholders filled in as plain text, and the RFC 6068 `mailto:` URL an
//! inviter opens in their own mail client.
//!
//! Nothing put into a template can reach a header: the subject is one line (its placeholders
//! are names and an organisation name, parsed as one line each, and any line break left is
//! folded to a space), and the body is `text/plain`, so the inviter's message is only ever text.

use chrono::{DateTime, Datelike, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::domain::{Locale, ParseError};

/// Which mail: an invitation by email (the one organisations may reword), the set-password
/// mail of a direct registration, or the address confirmation of a link registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Invitation,
    Registration,
    Confirmation,
}

/// A subject and body with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub subject: String,
    pub body: String,
}

/// What fills the placeholders.
pub struct Fill<'a> {
    pub organization: &'a str,
    pub inviter: &'a str,
    pub link: &'a str,
    pub expires: DateTime<Utc>,
    pub message: &'a str,
}

pub const PLACEHOLDERS: &str = "{organization}, {inviter}, {link}, {expires}, {message}";
pub const SUBJECT_MAX: usize = 200;
pub const BODY_MAX: usize = 10_000;

pub fn shipped(purpose: Purpose, locale: Locale) -> Template {
    let (subject, body) = match (purpose, locale) {
        (Purpose::Invitation, Locale::En) => (
            "{inviter} invites you to join {organization}",
            "Hello,\n\n{inviter} invites you to join {organization} on Mailroom.\n\n{message}\n\nTo accept, open this link and choose your name and password:\n{link}\n\nThe link works once and until {expires}. If you did not expect this invitation, ignore this mail.\n",
        ),
        (Purpose::Invitation, Locale::Ru) => (
            "{inviter} приглашает вас в {organization}",
            "Здравствуйте!\n\n{inviter} приглашает вас присоединиться к {organization} в Mailroom.\n\n{message}\n\nЧтобы принять приглашение, откройте ссылку и укажите имя и пароль:\n{link}\n\nСсылка действует один раз и до {expires}. Если вы не ждали этого приглашения, просто не отвечайте на письмо.\n",
        ),
        (Purpose::Registration, Locale::En) => (
            "Your account at {organization}",
            "Hello,\n\n{inviter} has registered you at {organization} on Mailroom.\n\nChoose your password here to sign in:\n{link}\n\nThe link works once and until {expires}.\n",
        ),
        (Purpose::Registration, Locale::Ru) => (
            "Ваша учётная запись в {organization}",
            "Здравствуйте!\n\n{inviter} зарегистрировал(а) вас в {organization} в Mailroom.\n\nЗадайте пароль по ссылке, чтобы войти:\n{link}\n\nСсылка действует один раз и до {expires}.\n",
        ),
        (Purpose::Confirmation, Locale::En) => (
            "Confirm your address to join {organization}",
            "Hello,\n\nSomeone — we hope you — asked to join {organization} on Mailroom with this address.\n\nTo confirm it and choose your password, open:\n{link}\n\nThe link works once and until {expires}. If it was not you, ignore this mail.\n",
        ),
        (Purpose::Confirmation, Locale::Ru) => (
            "Подтвердите адрес, чтобы присоединиться к {organization}",
            "Здравствуйте!\n\nКто-то (надеемся, вы) попросил присоединиться к {organization} в Mailroom с этим адресом.\n\nЧтобы подтвердить его и задать пароль, откройте:\n{link}\n\nСсылка действует один раз и до {expires}. Если это были не вы, просто не отвечайте на письмо.\n",
        ),
    };
    Template {
        subject: subject.into(),
        body: body.into(),
    }
}

/// Checks an organisation's own wording: a one-line subject, a body that carries `{link}`
/// (an invitation without its link is useless), and nothing unprintable.
pub fn parse_custom(subject: &str, body: &str) -> Result<Template, ParseError> {
    let subject = crate::domain::one_line("subject", subject, SUBJECT_MAX)?;
    if subject.is_empty() {
        return Err(ParseError::Missing { field: "subject" });
    }
    let body = body.replace("\r\n", "\n").replace('\r', "\n");
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ParseError::Text {
            field: "body",
            reason: "cannot contain control characters".into(),
        });
    }
    if body.chars().count() > BODY_MAX {
        return Err(ParseError::Text {
            field: "body",
            reason: format!("is longer than {BODY_MAX} characters"),
        });
    }
    if !body.contains("{link}") {
        return Err(ParseError::Text {
            field: "body",
            reason: format!(
                "must contain {{link}}, where each invitee's personal link goes (placeholders: {PLACEHOLDERS})"
            ),
        });
    }
    Ok(Template { subject, body })
}

/// The date an invitation expires, as the reader's language writes it.
pub fn date(at: DateTime<Utc>, locale: Locale) -> String {
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const RU: [&str; 12] = [
        "января",
        "февраля",
        "марта",
        "апреля",
        "мая",
        "июня",
        "июля",
        "августа",
        "сентября",
        "октября",
        "ноября",
        "декабря",
    ];
    let month = at.month0() as usize;
    match locale {
        Locale::En => format!("{} {} {} (UTC)", at.day(), EN[month], at.year()),
        Locale::Ru => format!("{} {} {} г. (UTC)", at.day(), RU[month], at.year()),
    }
}

/// The template with its placeholders filled. The subject comes out as one line.
pub fn render(template: &Template, fill: &Fill<'_>, locale: Locale) -> Template {
    let expires = date(fill.expires, locale);
    let replace = |text: &str, message: &str| {
        // One pass over the text, so a value that itself looks like a placeholder (an
        // inviter named "{link}") is left as written.
        let mut out = String::with_capacity(text.len() + 256);
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let (value, len) = [
                ("{organization}", fill.organization),
                ("{inviter}", fill.inviter),
                ("{link}", fill.link),
                ("{expires}", expires.as_str()),
                ("{message}", message),
            ]
            .iter()
            .find(|(name, _)| tail.starts_with(name))
            .map(|(name, value)| (*value, name.len()))
            .unwrap_or(("{", 1));
            out.push_str(value);
            rest = &tail[len..];
        }
        out.push_str(rest);
        out
    };
    let subject = replace(&template.subject, "")
        .split(['\r', '\n'])
        .collect::<Vec<_>>()
        .join(" ");
    let mut body = replace(&template.body, fill.message);
    // An empty message leaves no hole of blank lines.
    while body.contains("\n\n\n") {
        body = body.replace("\n\n\n", "\n\n");
    }
    Template {
        subject: subject.trim().to_owned(),
        body,
    }
}

/// What RFC 6068 lets stand unencoded in a header value: the unreserved characters.
const MAILTO_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// In the address part, `@` too.
const MAILTO_ADDRESS: &AsciiSet = &MAILTO_VALUE.remove(b'@');

/// `mailto:to?subject=…&body=…`, every value UTF-8 and percent-encoded, line breaks as CRLF
/// (`%0D%0A`), as RFC 6068 asks.
pub fn mailto(to: &str, subject: &str, body: &str) -> String {
    let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
    format!(
        "mailto:{}?subject={}&body={}",
        utf8_percent_encode(to, MAILTO_ADDRESS),
        utf8_percent_encode(subject, MAILTO_VALUE),
        utf8_percent_encode(&body, MAILTO_VALUE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fill<'a>(inviter: &'a str, message: &'a str) -> Fill<'a> {
        Fill {
            organization: "Acme",
            inviter,
            link: "https://mail.acme.test/invite?token=abc",
            expires: Utc.with_ymd_and_hms(2026, 12, 10, 9, 0, 0).unwrap(),
            message,
        }
    }

    #[test]
    fn placeholders_are_filled_once_and_values_stay_literal() {
        let t = Template {
            subject: "{inviter} → {organization}".into(),
            body: "{message}\n{link}\n{unknown}".into(),
        };
        let out = render(&t, &fill("{link}", "see {organization}"), Locale::En);
        assert_eq!(out.subject, "{link} → Acme");
        assert_eq!(
            out.body,
            "see {organization}\nhttps://mail.acme.test/invite?token=abc\n{unknown}"
        );
    }

    #[test]
    fn an_empty_message_leaves_no_gap_and_russian_dates_decline() {
        let out = render(
            &shipped(Purpose::Invitation, Locale::Ru),
            &fill("Анна", ""),
            Locale::Ru,
        );
        assert!(!out.body.contains("\n\n\n"));
        assert!(out.body.contains("10 декабря 2026"));
        assert_eq!(out.subject, "Анна приглашает вас в Acme");
    }

    #[test]
    fn a_line_break_never_reaches_the_subject() {
        let t = Template {
            subject: "{inviter}".into(),
            body: "{link}".into(),
        };
        let out = render(&t, &fill("Ann\r\nBcc: x@y.test", ""), Locale::En);
        assert!(!out.subject.contains('\n') && !out.subject.contains('\r'));
    }

    #[test]
    fn mailto_is_rfc_6068_encoded() {
        let url = mailto(
            "ann@x.test",
            "Join Acme & co",
            "Hi Ann,\nopen https://a.test/i?t=1&x=2\n",
        );
        assert_eq!(
            url,
            "mailto:ann@x.test?subject=Join%20Acme%20%26%20co&body=Hi%20Ann%2C%0D%0Aopen%20https%3A%2F%2Fa.test%2Fi%3Ft%3D1%26x%3D2%0D%0A"
        );
        assert!(mailto("a@x.test", "Привет", "").contains("subject=%D0%9F%D1%80"));
    }

    #[test]
    fn custom_templates_need_their_link() {
        assert!(parse_custom("Join us", "no link here").is_err());
        assert!(parse_custom("Two\nlines", "{link}").is_err());
        assert_eq!(
            parse_custom(" Join  us ", "Open {link}").unwrap().subject,
            "Join us"
        );
    }
}
