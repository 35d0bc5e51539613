//! Inputs parsed once into types that cannot hold a bad value: the pasted address list, names,
//! locales, the inviter's message, link domains; what one admission is made of ([`Batch`],
//! [`Invitee`], [`Names`]); and the states an invitation moves through.

use mailroom_platform::email;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::text::{canonical, check_visible, Use};
use mailroom_types::{DepartmentId, OrgId, RegistrationLinkId, UserId};

/// Why an input was refused, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{field}` is required")]
    Missing { field: &'static str },
    #[error("`{field}` is not a valid email address: {reason}")]
    Email { field: &'static str, reason: String },
    #[error("`{field}` {reason}")]
    Text { field: &'static str, reason: String },
}

/// A normalised email address (lower case, ASCII domain), safe in a mail header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(field: &'static str, input: &str) -> Result<Self, ParseError> {
        email::normalise(input).map(Self).map_err(|e| match e {
            email::EmailError::Missing => ParseError::Missing { field },
            other => ParseError::Email {
                field,
                reason: other.to_string(),
            },
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        email::domain_of(&self.0)
    }
}

impl std::fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of a pasted address list, parsed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Address {
        input: String,
        address: EmailAddress,
    },
    Malformed {
        input: String,
        reason: String,
    },
    Duplicate {
        input: String,
        address: EmailAddress,
    },
}

/// At most this many addresses in one call.
pub const MAX_ADDRESSES: usize = 2_000;

/// Splits what people paste — addresses separated by spaces, commas, semicolons or line breaks,
/// each perhaps written `Name <address>` — into entries, in order. Every address in the text
/// becomes an entry (`Ann Lee <a@x.test> b@x.test` is two), and every other word is reported
/// as malformed, so nothing pasted is silently dropped. The second mention of an address is a
/// duplicate.
pub fn address_list(input: &str) -> Result<Vec<Entry>, ParseError> {
    let mut words = Vec::new();
    for piece in input.split([',', ';', '\n', '\r']) {
        piece_words(piece.trim(), &mut words);
    }
    if words.is_empty() {
        return Err(ParseError::Missing { field: "emails" });
    }
    if words.len() > MAX_ADDRESSES {
        return Err(ParseError::Text {
            field: "emails",
            reason: format!(
                "holds {} addresses; at most {MAX_ADDRESSES} can be invited in one call",
                words.len()
            ),
        });
    }
    let mut seen = std::collections::HashSet::new();
    Ok(words
        .into_iter()
        .map(|(input, word)| match EmailAddress::parse("emails", &word) {
            Ok(address) if !seen.insert(address.clone()) => Entry::Duplicate { input, address },
            Ok(address) => Entry::Address { input, address },
            Err(err) => Entry::Malformed {
                input,
                reason: err.to_string(),
            },
        })
        .collect())
}

/// The entries of one piece of a pasted list, as (what the caller wrote, the address to parse):
/// each `<address>` with the name written before it, and every other word on its own. A word
/// with an `@` before a bracket is an address of its own, not part of the bracket's name.
fn piece_words(piece: &str, words: &mut Vec<(String, String)>) {
    let mut rest = piece;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else {
            break;
        };
        let before = &rest[..open];
        // The name is what follows the last word holding an `@` (itself an address).
        let name_start = words_at(before)
            .filter(|(_, w)| w.contains('@'))
            .last()
            .map_or(0, |(at, w)| at + w.len());
        for (_, w) in words_at(&before[..name_start]) {
            words.push((w.to_owned(), w.to_owned()));
        }
        words.push((
            rest[name_start..=close].trim().to_owned(),
            rest[open + 1..close].trim().to_owned(),
        ));
        rest = &rest[close + 1..];
    }
    for (_, w) in words_at(rest) {
        words.push((w.to_owned(), w.to_owned()));
    }
}

/// The whitespace-separated words of `text`, each with its byte offset.
fn words_at(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split(char::is_whitespace).filter_map(move |w| {
        let at = offset;
        offset += w.len()
            + text[at + w.len()..]
                .chars()
                .next()
                .map_or(0, char::len_utf8);
        (!w.is_empty()).then_some((at, w))
    })
}

/// Whether mail to `address` needs SMTPUTF8 (RFC 6531): its part before the `@` is not ASCII
/// (the domain is always stored as ASCII). Most relays cannot deliver it.
pub fn needs_smtputf8(address: &EmailAddress) -> bool {
    address
        .as_str()
        .rsplit_once('@')
        .is_some_and(|(local, _)| !local.is_ascii())
}

/// The refusal of such an address when Mailroom would send the mail.
pub fn undeliverable_local_part(address: &EmailAddress) -> String {
    format!(
        "{address} cannot be mailed: the mail system cannot deliver to an address with non-ASCII characters before the @ (its relay lacks SMTPUTF8); use an ASCII address for this person, or send the invitation from your own mail client"
    )
}

/// The languages invitation mail ships in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locale {
    En,
    Ru,
}

impl Locale {
    /// Empty means English; "ru-RU" and "RU" mean Russian.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let lang = input
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match lang.as_str() {
            "" | "en" => Ok(Locale::En),
            "ru" => Ok(Locale::Ru),
            _ => Err(ParseError::Text {
                field: "locale",
                reason: format!(
                    "`{input}` is not a language invitations are written in; use \"en\" or \"ru\""
                ),
            }),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ru => "ru",
        }
    }

    pub fn from_db(code: &str) -> Self {
        Locale::parse(code).unwrap_or(Locale::En)
    }
}

/// One line of printable text (a name): NFC, spaces folded, no control or invisible characters.
///
/// Not `mailroom_platform::email::one_line`, which is close but not the same rule: that one
/// refuses U+2028/U+2029 where this folds them into a space like any other white space, and
/// its refusals are coarser ("is too long", no code point named) than the ones here, which
/// say the limit and which character to retype.
pub fn one_line(field: &'static str, input: &str, max: usize) -> Result<String, ParseError> {
    if input.chars().any(|c| c.is_control()) {
        return Err(ParseError::Text {
            field,
            reason: "cannot contain line breaks or control characters".into(),
        });
    }
    let text = canonical(input)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    check_visible(&text, Use::Name).map_err(|r| ParseError::Text {
        field,
        reason: r.to_string(),
    })?;
    if text.chars().count() > max {
        return Err(ParseError::Text {
            field,
            reason: format!("is longer than {max} characters"),
        });
    }
    Ok(text)
}

/// The inviter's own words: plain text of at most [`MESSAGE_MAX`] characters. Line breaks are
/// kept (as `\n`); other control characters and invisible ones are refused. It only ever goes
/// into a plain-text body, never a header.
pub fn message(input: &str) -> Result<String, ParseError> {
    let text = canonical(&input.replace("\r\n", "\n").replace('\r', "\n"));
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ParseError::Text {
            field: "message",
            reason: "cannot contain control characters".into(),
        });
    }
    for line in text.lines() {
        check_visible(line, Use::Name).map_err(|r| ParseError::Text {
            field: "message",
            reason: r.to_string(),
        })?;
    }
    if text.chars().count() > MESSAGE_MAX {
        return Err(ParseError::Text {
            field: "message",
            reason: format!("is longer than {MESSAGE_MAX} characters"),
        });
    }
    Ok(text.trim().to_owned())
}

pub const MESSAGE_MAX: usize = 2_000;
pub const NAME_MAX: usize = 100;

/// A domain a registration link accepts (`acme.test`), lower case ASCII.
pub fn allowed_domain(input: &str) -> Result<String, ParseError> {
    let trimmed = input.trim().trim_start_matches('@');
    email::domain_name(trimmed).map_err(|reason| ParseError::Text {
        field: "allowed_domains",
        reason: format!("`{input}` is not a domain name: {reason}"),
    })
}

/// One address to admit, with the names given for it (direct and link registration).
pub struct Invitee {
    /// What the caller wrote, as they wrote it (reported back with a refusal).
    pub input: String,
    pub email: EmailAddress,
    pub first_name: String,
    pub last_name: String,
    pub position: String,
}

impl Invitee {
    /// An address from a pasted list: no names.
    pub fn address(input: String, email: EmailAddress) -> Self {
        Self {
            input,
            email,
            first_name: String::new(),
            last_name: String::new(),
            position: String::new(),
        }
    }
}

/// What is the same for every invitee of one admission.
pub struct Batch {
    pub org_id: OrgId,
    pub inviter: UserId,
    pub kind: Kind,
    pub delivery: Delivery,
    /// `Pending`, or `AwaitingApproval` for a link that needs an admin.
    pub target: State,
    pub department_id: Option<DepartmentId>,
    pub link_id: Option<RegistrationLinkId>,
    pub message: String,
    pub locale: Locale,
    pub names: Names,
    pub actor: EventActor,
}

/// The names a mail and the registration page show, as they were when the invitation was made.
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub organization: String,
    pub inviter: String,
    pub department: String,
}

macro_rules! db_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $db:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn as_db(self) -> &'static str {
                match self { $($name::$variant => $db),* }
            }
            pub fn from_db(s: &str) -> Option<Self> {
                match s { $($db => Some($name::$variant),)* _ => None }
            }
        }
    };
}

db_enum!(
    /// Where an invitation is in its life.
    State {
        Admitting = "admitting",
        Pending = "pending",
        Accepted = "accepted",
        Expired = "expired",
        Revoked = "revoked",
        Failed = "failed",
        AwaitingApproval = "awaiting_approval",
        Rejected = "rejected",
    }
);

db_enum!(
    /// How the person came to be invited.
    Kind {
        Email = "email",
        DirectRegistration = "direct_registration",
        RegistrationLink = "registration_link",
    }
);

db_enum!(
    /// Who sends the mail.
    Delivery {
        SystemMail = "system_mail",
        OwnMailClient = "own_mail_client",
    }
);

db_enum!(
    /// Where the invitation mail is.
    DeliveryState {
        Queued = "queued",
        Sent = "sent",
        Failed = "failed",
        NotSent = "not_sent",
    }
);

impl State {
    /// The name used in filters, events and messages.
    pub fn upper(self) -> &'static str {
        match self {
            State::Admitting => "ADMITTING",
            State::Pending => "PENDING",
            State::Accepted => "ACCEPTED",
            State::Expired => "EXPIRED",
            State::Revoked => "REVOKED",
            State::Failed => "FAILED",
            State::AwaitingApproval => "AWAITING_APPROVAL",
            State::Rejected => "REJECTED",
        }
    }

    pub fn from_filter(s: &str) -> Option<Self> {
        let s = s.trim_start_matches("INVITATION_STATE_");
        [
            State::Pending,
            State::Accepted,
            State::Expired,
            State::Revoked,
            State::Failed,
            State::AwaitingApproval,
            State::Rejected,
        ]
        .into_iter()
        .find(|st| st.upper().eq_ignore_ascii_case(s))
    }

    /// Open invitations hold an INVITED user and a seat (a registration through a link only
    /// once its address is confirmed: see `InvitationRow::invitee_admitted`).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            State::Admitting | State::Pending | State::Failed | State::AwaitingApproval
        )
    }
}

impl Kind {
    pub fn upper(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::DirectRegistration => "DIRECT_REGISTRATION",
            Kind::RegistrationLink => "REGISTRATION_LINK",
        }
    }

    pub fn from_filter(s: &str) -> Option<Self> {
        let s = s.trim_start_matches("INVITATION_KIND_");
        [
            Kind::Email,
            Kind::DirectRegistration,
            Kind::RegistrationLink,
        ]
        .into_iter()
        .find(|k| k.upper().eq_ignore_ascii_case(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(input: &str) -> Vec<String> {
        address_list(input)
            .unwrap()
            .into_iter()
            .map(|e| match e {
                Entry::Address { address, .. } => address.to_string(),
                Entry::Malformed { input, .. } => format!("malformed:{input}"),
                Entry::Duplicate { input, .. } => format!("duplicate:{input}"),
            })
            .collect()
    }

    #[test]
    fn pasted_lists_split_on_spaces_commas_semicolons_and_lines() {
        assert_eq!(
            addresses("a@x.test b@x.test,c@x.test;\r\nd@x.test\n\n e@x.test "),
            ["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"]
        );
    }

    #[test]
    fn named_addresses_keep_their_name_out() {
        assert_eq!(
            addresses("Ann Lee <Ann@X.test>, \"Bob, Jr\" <bob@x.test>"),
            ["ann@x.test", "malformed:\"Bob", "bob@x.test"]
        );
    }

    #[test]
    fn every_address_of_a_line_is_an_entry_whatever_its_brackets() {
        assert_eq!(
            addresses("Ann Lee <a@x.test> b@x.test"),
            ["a@x.test", "b@x.test"]
        );
        assert_eq!(
            addresses("c@x.test Cy Doe <d@x.test>"),
            ["c@x.test", "d@x.test"]
        );
        assert_eq!(
            addresses("<e@x.test><f@x.test> Gil Ray <g@x.test> junk <h@x.test"),
            [
                "e@x.test",
                "f@x.test",
                "g@x.test",
                "malformed:junk",
                "malformed:<h@x.test"
            ]
        );
        let entries = address_list("Ann Lee <a@x.test> b@x.test\u{3000}Ян <я@x.test>").unwrap();
        let inputs: Vec<&str> = entries
            .iter()
            .map(|e| match e {
                Entry::Address { input, .. }
                | Entry::Malformed { input, .. }
                | Entry::Duplicate { input, .. } => input.as_str(),
            })
            .collect();
        assert_eq!(inputs, ["Ann Lee <a@x.test>", "b@x.test", "Ян <я@x.test>"]);
    }

    #[test]
    fn a_non_ascii_local_part_needs_smtputf8_and_a_non_ascii_domain_does_not() {
        let parse = |s: &str| EmailAddress::parse("email", s).unwrap();
        assert!(needs_smtputf8(&parse("анна@x.test")));
        assert!(!needs_smtputf8(&parse("anna@пример.рф")));
        assert!(!needs_smtputf8(&parse("anna@x.test")));
    }

    #[test]
    fn repeats_and_junk_are_reported_in_place() {
        assert_eq!(
            addresses("a@x.test A@X.TEST not-an-address a@x.test"),
            [
                "a@x.test",
                "duplicate:A@X.TEST",
                "malformed:not-an-address",
                "duplicate:a@x.test"
            ]
        );
    }

    #[test]
    fn an_empty_list_is_missing() {
        assert_eq!(
            address_list(" ,\n; "),
            Err(ParseError::Missing { field: "emails" })
        );
    }

    #[test]
    fn header_injection_through_an_address_is_malformed() {
        let entries = address_list("a@x.test\r\nBcc: victim@y.test").unwrap();
        assert!(matches!(&entries[1], Entry::Malformed { input, .. } if input == "Bcc:"));
        assert!(
            matches!(&entries[2], Entry::Address { address, .. } if address.as_str() == "victim@y.test")
        );
    }

    #[test]
    fn locales() {
        assert_eq!(Locale::parse("").unwrap(), Locale::En);
        assert_eq!(Locale::parse("ru-RU").unwrap(), Locale::Ru);
        assert!(Locale::parse("de").is_err());
    }

    #[test]
    fn messages_keep_lines_but_not_control_characters() {
        assert_eq!(message("Hi,\r\nwelcome!\r\n").unwrap(), "Hi,\nwelcome!");
        assert!(message("bell\u{7}").is_err());
    }
}
