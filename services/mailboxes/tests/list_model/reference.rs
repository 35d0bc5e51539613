//! The reference: filters as the test writes them, each condition read straight from its
//! definition on one row, random filters and scopes, and the sort as it should be.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use mailroom_mailboxes::scope::Scope;
use mailroom_types::UserId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::rows::{days_ago, id, Row, User, DISK_MB, STATES};

#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    const ALL: [Cmp; 6] = [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];

    fn text(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Text {
    Email,
    Name,
    SenderName,
    Owner,
}

#[derive(Debug, Clone, Copy)]
pub enum Num {
    DiskMb,
    Unread,
    Messages,
}

/// A filter as the test writes it, and the reference reads it.
#[derive(Debug, Clone)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Contains(Text, String),
    /// `=` (or `!=` when negated).
    TextIs(Text, String, bool),
    OwnerIs(UserId, bool),
    LastSync(Cmp, DateTime<Utc>),
    DaysSinceSync(Cmp, i64),
    InCrm(bool, bool),
    OwnerDismissed(bool, bool),
    Number(Num, Cmp, f64),
    State(&'static str, bool),
    Queue(UserId, bool),
    AccessBy(UserId, bool),
}

pub fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

pub fn eq_ne(negated: bool) -> &'static str {
    if negated {
        "!="
    } else {
        "="
    }
}

impl Filter {
    /// The filter's text; every compound part in parentheses, so precedence cannot matter.
    pub fn render(&self) -> String {
        let group = |f: &Filter| match f {
            Filter::And(_) | Filter::Or(_) | Filter::Not(_) => format!("({})", f.render()),
            _ => f.render(),
        };
        match self {
            Filter::And(parts) => parts.iter().map(group).collect::<Vec<_>>().join(" AND "),
            Filter::Or(parts) => parts.iter().map(group).collect::<Vec<_>>().join(" OR "),
            Filter::Not(inner) => format!("NOT {}", group(inner)),
            Filter::Contains(field, value) => format!("{} : {}", text_field(*field), quoted(value)),
            Filter::TextIs(field, value, negated) => {
                format!(
                    "{} {} {}",
                    text_field(*field),
                    eq_ne(*negated),
                    quoted(value)
                )
            }
            Filter::OwnerIs(user, negated) => {
                format!("owner_user_id {} \"{user}\"", eq_ne(*negated))
            }
            Filter::LastSync(cmp, at) => {
                let offset = FixedOffset::east_opt(3 * 3600).expect("offset");
                format!(
                    "last_sync_time {} \"{}\"",
                    cmp.text(),
                    at.with_timezone(&offset)
                        .to_rfc3339_opts(SecondsFormat::Micros, false)
                )
            }
            Filter::DaysSinceSync(cmp, days) => format!("days_since_sync {} {days}", cmp.text()),
            Filter::InCrm(value, negated) => format!("in_crm {} {value}", eq_ne(*negated)),
            Filter::OwnerDismissed(value, negated) => {
                format!("owner_dismissed {} {value}", eq_ne(*negated))
            }
            Filter::Number(field, cmp, value) => {
                let name = match field {
                    Num::DiskMb => "disk_mb",
                    Num::Unread => "unread_count",
                    Num::Messages => "message_count",
                };
                format!("{name} {} {value}", cmp.text())
            }
            Filter::State(state, negated) => {
                let word = match state.len() % 3 {
                    0 => state.to_ascii_uppercase(),
                    1 => format!("SYNC_STATE_{}", state.to_ascii_uppercase()),
                    _ => (*state).to_owned(),
                };
                format!("sync_state {} {word}", eq_ne(*negated))
            }
            Filter::Queue(user, negated) => format!("crm_queue {} \"{user}\"", eq_ne(*negated)),
            Filter::AccessBy(user, negated) => format!("access_by {} \"{user}\"", eq_ne(*negated)),
        }
    }

    /// The reference: the definition of each condition, on one row.
    pub fn holds(&self, r: &Row, now: DateTime<Utc>, reads: &[(UserId, Scope)]) -> bool {
        match self {
            Filter::And(parts) => parts.iter().all(|p| p.holds(r, now, reads)),
            Filter::Or(parts) => parts.iter().any(|p| p.holds(r, now, reads)),
            Filter::Not(inner) => !inner.holds(r, now, reads),
            Filter::Contains(field, value) => {
                text_of(r, *field, false).contains(&value.to_lowercase())
            }
            Filter::TextIs(field, value, negated) => {
                (text_of(r, *field, true) == value.to_lowercase()) != *negated
            }
            Filter::OwnerIs(user, negated) => (r.owner == *user) != *negated,
            // Never synced is longer ago than any time.
            Filter::LastSync(cmp, at) => cmp.holds(r.last_sync, Some(*at)),
            Filter::DaysSinceSync(cmp, days) => {
                let ago = match r.last_sync {
                    Some(t) => (now - t).num_microseconds().expect("small") as f64 / 86_400e6,
                    None => f64::INFINITY,
                };
                let days = *days as f64;
                match cmp {
                    // Whole days: synced between N and N+1 days ago.
                    Cmp::Eq => ago >= days && ago < days + 1.0,
                    Cmp::Ne => !(ago >= days && ago < days + 1.0),
                    other => other.holds(ago, days),
                }
            }
            Filter::InCrm(value, negated) => (r.in_crm == *value) != *negated,
            Filter::OwnerDismissed(value, negated) => (r.dismissed == *value) != *negated,
            Filter::Number(field, cmp, value) => match field {
                Num::DiskMb => cmp.holds(r.disk as f64, value * 1_048_576.0),
                Num::Unread => cmp.holds(r.unread as f64, *value),
                Num::Messages => cmp.holds(r.messages as f64, *value),
            },
            Filter::State(state, negated) => (r.state == *state) != *negated,
            Filter::Queue(user, negated) => r.queue.contains(user) != *negated,
            Filter::AccessBy(user, negated) => {
                let scope = reads
                    .iter()
                    .find(|(u, _)| u == user)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(Scope::nothing);
                covers(&scope, r) != *negated
            }
        }
    }

    pub fn access_by(&self, out: &mut Vec<UserId>) {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| p.access_by(out)),
            Filter::Not(inner) => inner.access_by(out),
            Filter::AccessBy(user, _) if !out.contains(user) => out.push(*user),
            _ => {}
        }
    }
}

pub fn text_field(field: Text) -> &'static str {
    match field {
        Text::Email => "email",
        Text::Name => "name",
        Text::SenderName => "sender_name",
        Text::Owner => "owner",
    }
}

/// What a text condition reads, case-folded: for the owner, `=` reads the last name and `:`
/// "last first".
pub fn text_of(r: &Row, field: Text, whole: bool) -> String {
    match field {
        Text::Email => r.email.to_lowercase(),
        Text::Name => r.name.to_lowercase(),
        Text::SenderName => r.sender_name.to_lowercase(),
        Text::Owner if whole => r.last.to_lowercase(),
        Text::Owner => r.owner_key(),
    }
}

pub fn covers(scope: &Scope, r: &Row) -> bool {
    match scope {
        Scope::WholeOrganization => true,
        Scope::Some { owners, mailboxes } => owners.contains(&r.owner) || mailboxes.contains(&r.id),
    }
}

/// Some text the rows hold, re-cased at random: a part of it for `:`, all of it for `=`.
pub fn some_text(rng: &mut StdRng, rows: &[Row], field: Text, whole: bool) -> String {
    let row = rows.choose(rng).expect("rows");
    let source = match field {
        Text::Owner if whole => row.last.clone(),
        Text::Owner => format!("{} {}", row.last, row.first),
        Text::Email => row.email.clone(),
        Text::Name => row.name.clone(),
        Text::SenderName => row.sender_name.clone(),
    };
    let chars: Vec<char> = source.chars().collect();
    let picked: Vec<char> = if whole || chars.is_empty() {
        chars
    } else {
        let start = rng.gen_range(0..chars.len());
        let end = rng.gen_range(start..=chars.len().min(start + 4));
        chars[start..end].to_vec()
    };
    picked
        .into_iter()
        .map(|c| {
            if rng.gen_bool(0.5) {
                c.to_uppercase().next().unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

pub fn random_filter(
    rng: &mut StdRng,
    depth: u32,
    rows: &[Row],
    users: &[User],
    now: DateTime<Utc>,
) -> Filter {
    if depth > 0 && rng.gen_bool(0.45) {
        let parts = (0..rng.gen_range(2..4))
            .map(|_| random_filter(rng, depth - 1, rows, users, now))
            .collect();
        return match rng.gen_range(0..5) {
            0 | 1 => Filter::And(parts),
            2 | 3 => Filter::Or(parts),
            _ => Filter::Not(Box::new(random_filter(rng, depth - 1, rows, users, now))),
        };
    }
    let user = |rng: &mut StdRng| -> UserId {
        if rng.gen_bool(0.85) {
            users.choose(rng).expect("users").id
        } else {
            id(rng)
        }
    };
    let fields = [Text::Email, Text::Name, Text::SenderName, Text::Owner];
    match rng.gen_range(0..13) {
        0 | 1 => {
            let field = *fields.choose(rng).expect("fields");
            Filter::Contains(field, some_text(rng, rows, field, false))
        }
        2 => {
            let field = *fields.choose(rng).expect("fields");
            Filter::TextIs(field, some_text(rng, rows, field, true), rng.gen())
        }
        3 => Filter::OwnerIs(user(rng), rng.gen()),
        4 => {
            let at = match rows.choose(rng).and_then(|r| r.last_sync) {
                Some(t) if rng.gen_bool(0.7) => t,
                _ => days_ago(now, rng.gen_range(0..8), rng),
            };
            Filter::LastSync(*Cmp::ALL.choose(rng).expect("cmp"), at)
        }
        5 => Filter::DaysSinceSync(*Cmp::ALL.choose(rng).expect("cmp"), rng.gen_range(0..8)),
        6 => Filter::InCrm(rng.gen(), rng.gen()),
        7 => Filter::OwnerDismissed(rng.gen(), rng.gen()),
        8 => {
            let (field, value) = match rng.gen_range(0..3) {
                0 => (Num::DiskMb, *DISK_MB.choose(rng).expect("disk")),
                1 => (Num::Unread, f64::from(rng.gen_range(0..5))),
                _ => (Num::Messages, f64::from(rng.gen_range(0..7))),
            };
            Filter::Number(field, *Cmp::ALL.choose(rng).expect("cmp"), value)
        }
        9 => Filter::State(STATES.choose(rng).expect("states"), rng.gen()),
        10 => Filter::Queue(user(rng), rng.gen()),
        _ => Filter::AccessBy(user(rng), rng.gen()),
    }
}

pub fn random_scope(rng: &mut StdRng, rows: &[Row], users: &[User]) -> Scope {
    if rng.gen_bool(0.35) {
        return Scope::WholeOrganization;
    }
    let (owners, mailboxes) = (rng.gen_range(0..4), rng.gen_range(0..5));
    Scope::Some {
        owners: users.choose_multiple(rng, owners).map(|u| u.id).collect(),
        // Any organisation's mailboxes: another organisation's must not leak in.
        mailboxes: rows.choose_multiple(rng, mailboxes).map(|r| r.id).collect(),
    }
}

/// A sort value as the reference orders it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Text(String),
    Number(i64),
    /// `None` (never synced) first: the migration keeps `-infinity` so the stalest sort first.
    Time(Option<DateTime<Utc>>),
}

pub const ORDERS: [&str; 12] = [
    "email",
    "name",
    "sender_name",
    "owner",
    "employee",
    "last_sync_time",
    "sync_state",
    "unread_count",
    "message_count",
    "disk_mb",
    "create_time",
    "owner_last_name",
];

pub fn sort_key(order: &str, r: &Row) -> Key {
    match order {
        "email" => Key::Text(r.email.to_lowercase()),
        "name" => Key::Text(r.name.to_lowercase()),
        "sender_name" => Key::Text(r.sender_name.to_lowercase()),
        "owner" | "employee" | "owner_last_name" => Key::Text(r.owner_key()),
        "last_sync_time" => Key::Time(r.last_sync),
        "sync_state" => Key::Text(r.state.to_owned()),
        "unread_count" => Key::Number(r.unread),
        "message_count" => Key::Number(r.messages),
        "disk_mb" => Key::Number(r.disk),
        "create_time" => Key::Time(Some(r.created)),
        other => panic!("no such order {other}"),
    }
}
