//! Realistic sample mail for `mailroom dev`, the tests and the benchmarks: varied senders,
//! subjects (some in Russian, encoded as RFC 2047 words), dates and sizes, as RFC 5322 bytes.

use chrono::{DateTime, Duration, TimeZone, Utc};

const SENDERS: &[(&str, &str)] = &[
    ("Olivia Chen", "olivia.chen@acme.test"),
    ("Sam Ortiz", "sam.ortiz@acme.test"),
    ("Billing", "billing@supplier.example"),
    ("Иван Петров", "ivan.petrov@partner.example"),
    ("Yuki Tanaka", "yuki.tanaka@acme.test"),
    ("Newsletter", "news@vendor.example"),
];

const SUBJECTS: &[&str] = &[
    "Quarterly report draft",
    "Invoice #{n} is ready",
    "Re: Contract renewal",
    "Счёт на оплату №{n}",
    "Meeting notes — product sync",
    "Your order #{n} has shipped",
    "Вопрос по договору",
    "Lunch on Friday?",
];

const LINES: &[&str] = &[
    "Please find the figures attached below; let me know if anything looks off.",
    "We agreed to revisit the delivery dates once the supplier confirms capacity.",
    "Спасибо за письмо, ответим в течение рабочего дня.",
    "The meeting moves to 3 pm; the agenda is unchanged.",
    "Reminder: the invoice is due at the end of the month.",
];

/// The `n`th sample message addressed to `to`: its bytes and its date.
pub fn message(n: usize, to: &str) -> (Vec<u8>, DateTime<Utc>) {
    let (name, from) = SENDERS[n % SENDERS.len()];
    let subject = SUBJECTS[(n / 3) % SUBJECTS.len()].replace("{n}", &(1000 + n).to_string());
    let base = Utc
        .with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
        .single()
        .unwrap_or_default();
    let date = base + Duration::minutes(37 * n as i64);
    let encode = |text: &str| {
        if text.is_ascii() {
            text.to_owned()
        } else {
            use base64::Engine as _;
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        }
    };
    // Sizes from a few hundred bytes to tens of kilobytes.
    let paragraphs = 1 + (n * 7919) % 40;
    let mut body = String::new();
    for p in 0..paragraphs {
        body.push_str(LINES[(n + p) % LINES.len()]);
        body.push_str("\r\n");
    }
    let raw = format!(
        "From: {} <{from}>\r\nTo: {to}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <demo-{n}@mailroom.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}",
        encode(name),
        encode(&subject),
        date.to_rfc2822(),
    );
    (raw.into_bytes(), date)
}

/// The subject [`message`] gives message `n`, decoded.
pub fn subject(n: usize) -> String {
    SUBJECTS[(n / 3) % SUBJECTS.len()].replace("{n}", &(1000 + n).to_string())
}

/// An IMAP date-time (`"05-Jan-2026 09:00:00 +0000"`) for APPEND.
pub fn imap_date(date: DateTime<Utc>) -> String {
    format!("\"{}\"", date.format("%d-%b-%Y %H:%M:%S +0000"))
}

/// Fills `username`'s INBOX on a plain-IMAP server up to `count` sample messages (nothing
/// when it holds that many already), for `mailroom dev`. Returns how many were added.
pub async fn fill_inbox(
    host: &str,
    port: u16,
    username: &str,
    password: &str,
    count: usize,
) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connect to {host}:{port}"))?;
    let mut client = async_imap::Client::new(tcp);
    let _greeting = client.read_response().await?;
    let mut session = client
        .login(username, password)
        .await
        .map_err(|(e, _)| anyhow::anyhow!("log in as {username}: {e}"))?;
    let have = session.status("INBOX", "(MESSAGES)").await?.exists as usize;
    let mut added = 0;
    for n in have..count {
        let (raw, date) = message(n, username);
        let flags = if n % 3 == 0 { "(\\Seen)" } else { "()" };
        session
            .append("INBOX", Some(flags), Some(&imap_date(date)), &raw)
            .await?;
        added += 1;
    }
    let _ = session.logout().await;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::decode_words;

    #[test]
    fn sample_messages_vary_and_their_subjects_decode() {
        let (a, _) = message(0, "x@acme.test");
        let (b, _) = message(10, "x@acme.test");
        assert_ne!(a.len(), b.len());
        let text = String::from_utf8(message(9, "x@acme.test").0).unwrap();
        let line = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
        assert_eq!(
            decode_words(&line.as_bytes()["Subject: ".len()..]),
            subject(9)
        );
    }
}
