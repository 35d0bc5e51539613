//! One streamed command's answer read response by response, straight from what async-imap's
//! parser made of each line: what a FETCH carried ([`Fetched`], borrowed from the parsed
//! response, nothing copied or parsed twice) and the UIDs a `VANISHED` names.
//!
//! Unlike async-imap's `uid_fetch` stream, the answer ends at its tagged status, which is
//! kept ([`Answer::finish`]): a refused or cut-off answer can be told from a complete one.
//! Anything else the server sends meanwhile (EXISTS, a flag change of another session
//! without what was asked) is handed over as it is, for the caller to pass by.
//!
//! Invariant: nothing here waits without bound: every read is the caller's, under its own
//! timeout, and the connection's [`mailroom_mail::imap::guard`] bounds every response.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use async_imap::error::{Error, Result};
use async_imap::imap_proto::{AttributeValue, Envelope, RequestId, Response, Status};
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use mailroom_mail::imap::ImapSession;

use crate::domain::flags;

/// A command under way whose answer is read one response at a time.
pub(super) struct Answer<'s> {
    session: &'s mut ImapSession,
    tag: RequestId,
    /// The tagged status, once read.
    done: Option<Result<()>>,
}

impl<'s> Answer<'s> {
    /// Sends `command` (tag added).
    pub async fn start(session: &'s mut ImapSession, command: &str) -> Result<Answer<'s>> {
        let tag = session.run_command(command).await?;
        Ok(Answer {
            session,
            tag,
            done: None,
        })
    }

    /// What `read` makes of the next untagged response, or `None` once the tagged status has
    /// been read. (async-imap does not name the type of a response it hands over, so it is
    /// read here and what the caller needs is taken from it.)
    pub async fn next<T>(&mut self, read: impl FnOnce(&Response<'_>) -> T) -> Result<Option<T>> {
        if self.done.is_some() {
            return Ok(None);
        }
        let Some(response) = self.session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        if let Response::Done {
            tag,
            status,
            outcome,
        } = response.parsed()
        {
            if *tag == self.tag {
                let said = || format!("code: {:?}, info: {:?}", outcome.code, outcome.information);
                self.done = Some(match status {
                    Status::Ok => Ok(()),
                    Status::No => Err(Error::No(said())),
                    Status::Bad => Err(Error::Bad(said())),
                    other => Err(Error::Io(std::io::Error::other(format!(
                        "the command was answered {other:?}: {}",
                        said()
                    )))),
                });
                return Ok(None);
            }
        }
        Ok(Some(read(response.parsed())))
    }

    /// The tagged status: `Ok` for OK, the refusal for NO or BAD (as async-imap words them).
    /// Call after [`Answer::next`] gave `None`.
    pub fn finish(self) -> Result<()> {
        self.done.unwrap_or(Err(Error::ConnectionLost))
    }
}

/// What one FETCH response carried (borrowed from it).
#[derive(Debug, Default)]
pub(super) struct Fetched<'a> {
    pub uid: Option<u32>,
    pub flags: Option<&'a [Cow<'a, str>]>,
    pub size: Option<u32>,
    pub internal_date: Option<&'a str>,
    pub envelope: Option<&'a Envelope<'a>>,
}

impl<'a> Fetched<'a> {
    /// The FETCH `response` is, if it is one.
    pub fn of(response: &'a Response<'a>) -> Option<Fetched<'a>> {
        let Response::Fetch(_, attrs) = response else {
            return None;
        };
        let mut out = Fetched::default();
        for attr in attrs {
            match attr {
                AttributeValue::Uid(uid) => out.uid = Some(*uid),
                AttributeValue::Flags(f) => out.flags = Some(f.as_slice()),
                AttributeValue::Rfc822Size(s) => out.size = Some(*s),
                AttributeValue::InternalDate(d) => out.internal_date = Some(d.as_ref()),
                AttributeValue::Envelope(e) => out.envelope = Some(e.as_ref()),
                _ => {}
            }
        }
        Some(out)
    }

    /// System flags as bits and the other keywords space-separated (at most 32, each cut to
    /// 64 characters, sorted, without repeats); `\Recent` and other backslashed names the
    /// index does not keep are left out.
    pub fn flag_bits(&self) -> (i16, Option<String>) {
        flag_bits(self.flags.unwrap_or_default())
    }

    /// INTERNALDATE as a time, if it is one.
    pub fn internal_date(&self) -> Option<DateTime<Utc>> {
        self.internal_date.and_then(imap_date)
    }
}

/// The UID ranges a `VANISHED` response names, if `response` is one.
pub(super) fn vanished<'a>(response: &'a Response<'a>) -> Option<&'a [RangeInclusive<u32>]> {
    match response {
        Response::Vanished { uids, .. } => Some(uids.as_slice()),
        _ => None,
    }
}

/// See [`Fetched::flag_bits`]. System flags are matched without regard to case (RFC 3501).
pub(super) fn flag_bits(names: &[Cow<'_, str>]) -> (i16, Option<String>) {
    let mut bits = 0i16;
    let mut keywords: Vec<String> = Vec::new();
    for name in names {
        let name: &str = name;
        if let Some(system) = name.strip_prefix('\\') {
            bits |= match system.to_ascii_lowercase().as_str() {
                "seen" => flags::SEEN,
                "answered" => flags::ANSWERED,
                "flagged" => flags::FLAGGED,
                "deleted" => flags::DELETED,
                "draft" => flags::DRAFT,
                _ => 0,
            };
        } else if keywords.len() < 32 {
            keywords.push(name.chars().take(64).collect());
        }
    }
    if keywords.is_empty() {
        return (bits, None);
    }
    keywords.sort();
    keywords.dedup();
    (bits, Some(keywords.join(" ")))
}

/// The format async-imap reads INTERNALDATE with (the slow way, for what [`imap_date`]'s
/// quick reading does not take).
const DATE_TIME_FORMAT: &str = "%d-%b-%Y %H:%M:%S %z";

/// INTERNALDATE (`"06-Dec-2026 07:03:17 +0100"`, the day possibly space-padded) as a time.
pub(super) fn imap_date(text: &str) -> Option<DateTime<Utc>> {
    quick_date(text).or_else(|| {
        DateTime::parse_from_str(text, DATE_TIME_FORMAT)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    })
}

/// The usual spelling of INTERNALDATE read without chrono's format parser (a first sync
/// reads one per message).
fn quick_date(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    // `dd-Mon-yyyy hh:mm:ss +zzzz`, 26 bytes; a day below 10 as ` d` or `d` (25 bytes).
    let (day, rest) = match b.len() {
        26 => (
            two(b[0], b[1]).or_else(|| (b[0] == b' ').then(|| digit(b[1])).flatten())?,
            &b[2..],
        ),
        25 => (digit(b[0])?, &b[1..]),
        _ => return None,
    };
    // `-Mon-yyyy hh:mm:ss +zzzz`
    if rest[0] != b'-' || rest[4] != b'-' || rest[9] != b' ' || rest[12] != b':' {
        return None;
    }
    if rest[15] != b':' || rest[18] != b' ' {
        return None;
    }
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| rest[1..4].eq_ignore_ascii_case(&m[..]))?;
    let year = u32::from(two(rest[5], rest[6])?) * 100 + u32::from(two(rest[7], rest[8])?);
    let (hour, minute, second) = (
        two(rest[10], rest[11])?,
        two(rest[13], rest[14])?,
        two(rest[16], rest[17])?,
    );
    let sign = match rest[19] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset =
        i32::from(two(rest[20], rest[21])?) * 3600 + i32::from(two(rest[22], rest[23])?) * 60;
    let date =
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month as u32 + 1, u32::from(day))?
            .and_hms_opt(u32::from(hour), u32::from(minute), u32::from(second))?;
    FixedOffset::east_opt(sign * offset)?
        .from_local_datetime(&date)
        .single()
        .map(|d| d.with_timezone(&Utc))
}

fn digit(b: u8) -> Option<u8> {
    b.is_ascii_digit().then(|| b - b'0')
}

fn two(a: u8, b: u8) -> Option<u8> {
    Some(digit(a)? * 10 + digit(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_dates_read_quickly_equal_chrono_s_reading() {
        for text in [
            "06-Dec-2026 07:03:17 +0000",
            "31-Jan-1999 23:59:59 -0830",
            " 6-Feb-2024 00:00:00 +1400",
            "6-Feb-2024 00:00:00 +0100",
            "29-Feb-2024 12:00:00 +0000",
            "01-jan-2020 01:02:03 +0000",
        ] {
            let quick = quick_date(text);
            let slow = DateTime::parse_from_str(text, DATE_TIME_FORMAT)
                .ok()
                .map(|d| d.with_timezone(&Utc));
            assert!(quick.is_some(), "{text}");
            if slow.is_some() {
                assert_eq!(quick, slow, "{text}");
            }
        }
        for bad in [
            "30-Feb-2024 00:00:00 +0000",
            "06-Dez-2026 07:03:17 +0000",
            "06-Dec-2026 25:03:17 +0000",
            "06-Dec-2026 07:03:17 0000",
            "",
            "06-Dec-2026",
        ] {
            assert_eq!(quick_date(bad), None, "{bad}");
        }
        assert!(imap_date("06-Dec-2026 07:03:17 +0000").is_some());
    }

    #[test]
    fn flags_become_bits_and_sorted_keywords() {
        let names: Vec<Cow<str>> = ["Work", "\\Seen", "\\FLAGGED", "\\Recent", "$Label1", "Work"]
            .into_iter()
            .map(Cow::Borrowed)
            .collect();
        let (bits, keywords) = flag_bits(&names);
        assert_eq!(bits, flags::SEEN | flags::FLAGGED);
        assert_eq!(keywords.as_deref(), Some("$Label1 Work"));
        assert_eq!(flag_bits(&[]), (0, None));
    }
}
