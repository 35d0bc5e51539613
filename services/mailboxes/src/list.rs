//! The mailbox list's inputs: a filter parsed into typed conditions ([`Cond`]), a sort
//! ([`Order`]) and where a page starts ([`Cursor`]), plus the page sizes.
//!
//! No caller text ever becomes SQL text: the filter is parsed by `mailroom_aip` into a tree,
//! and each comparison is checked against the fields below and turned into a [`Cond`] that
//! holds only typed values. The SQL they become (every value bound, the caller's scope in the
//! same query, keyset pages) is written in one place, [`crate::store::list_query`].

use chrono::{DateTime, Utc};
use mailroom_aip::expr::{parse_expr, Expr};
use mailroom_aip::{shown, AipError, Comparison, Op, Value};
use mailroom_types::{MailboxId, UserId};
use serde::{Deserialize, Serialize};

use crate::domain::SyncState;

/// The default list page (when neither the request nor a saved view names one).
pub const DEFAULT_PAGE: i32 = 50;
/// The largest list page.
pub const MAX_PAGE: i32 = 500;

/// The text columns a filter matches, case-insensitively: `:` a substring (for the owner, of
/// "last first"), `=` the whole value (for the owner, the last name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Email,
    Name,
    SenderName,
    Owner,
}

/// How an ordered field compares with the filter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn from_op(op: Op) -> Option<Cmp> {
        Some(match op {
            Op::Eq => Cmp::Eq,
            Op::Ne => Cmp::Ne,
            Op::Lt => Cmp::Lt,
            Op::Le => Cmp::Le,
            Op::Gt => Cmp::Gt,
            Op::Ge => Cmp::Ge,
            Op::Has => return None,
        })
    }
}

/// The counters a filter compares (`disk_mb` becomes bytes when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumField {
    DiskBytes,
    Unread,
    Messages,
}

/// One typed condition of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    /// Case-insensitive substring.
    Contains(TextField, String),
    /// Case-insensitive equality (`negated` for `!=`).
    TextIs(TextField, String, bool),
    OwnerIs(UserId, bool),
    LastSync(Cmp, DateTime<Utc>),
    /// Not synced for more (or less) than some days: a bound on `last_sync_time` relative to
    /// now, computed by the database.
    SyncedDaysAgo(Cmp, i64),
    InCrm(bool),
    OwnerDismissed(bool),
    Number(NumField, Cmp, i64),
    State(SyncState, bool),
    QueueHas(UserId, bool),
    /// Who may read the mail; resolved through access control before rendering.
    AccessBy(UserId, bool),
}

fn filter_error(at: usize, reason: impl Into<String>) -> AipError {
    AipError::Filter {
        at,
        reason: reason.into(),
    }
}

/// The filter fields, for error messages.
pub const FIELDS: &str = "email, name, sender_name, owner, owner_user_id, last_sync_time, days_since_sync, in_crm, owner_dismissed, access_by, crm_queue, disk_mb, unread_count, message_count, sync_state";

/// Parses a filter into conditions (`None`: everything matches).
pub fn parse_filter(input: &str) -> Result<Option<Cond>, AipError> {
    parse_expr(input)?.map(|e| typed(&e)).transpose()
}

fn typed(expr: &Expr) -> Result<Cond, AipError> {
    Ok(match expr {
        Expr::And(parts) => Cond::And(parts.iter().map(typed).collect::<Result<_, _>>()?),
        Expr::Or(parts) => Cond::Or(parts.iter().map(typed).collect::<Result<_, _>>()?),
        Expr::Not(inner) => Cond::Not(Box::new(typed(inner)?)),
        Expr::Compare { at, comparison } => compare(*at, comparison)?,
    })
}

fn text_value(at: usize, field: &str, value: &Value) -> Result<String, AipError> {
    match value {
        Value::Text(s) | Value::Word(s) => Ok(s.to_lowercase()),
        Value::Number(_) => Ok(value.as_text()),
        Value::Bool(_) => Err(filter_error(
            at,
            format!("`{field}` compares with text, not true/false"),
        )),
    }
}

fn user_value(at: usize, field: &str, value: &Value) -> Result<UserId, AipError> {
    let text = value.as_text();
    text.parse::<UserId>().map_err(|_| {
        filter_error(
            at,
            format!("`{field}` takes a user id, not \"{}\"", shown(&text)),
        )
    })
}

fn bool_value(at: usize, field: &str, value: &Value) -> Result<bool, AipError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Word(w) | Value::Text(w) if w.eq_ignore_ascii_case("true") => Ok(true),
        Value::Word(w) | Value::Text(w) if w.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(filter_error(at, format!("`{field}` is true or false"))),
    }
}

fn number_value(at: usize, field: &str, value: &Value) -> Result<f64, AipError> {
    match value {
        Value::Number(n) if n.is_finite() => Ok(*n),
        Value::Text(s) | Value::Word(s) => s
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| {
                filter_error(
                    at,
                    format!("`{field}` takes a number, not \"{}\"", shown(s)),
                )
            }),
        _ => Err(filter_error(at, format!("`{field}` takes a number"))),
    }
}

fn equality(at: usize, field: &str, op: Op) -> Result<bool, AipError> {
    match op {
        Op::Eq => Ok(false),
        Op::Ne => Ok(true),
        _ => Err(filter_error(at, format!("`{field}` takes = or !="))),
    }
}

fn ordering(at: usize, field: &str, op: Op) -> Result<Cmp, AipError> {
    Cmp::from_op(op)
        .ok_or_else(|| filter_error(at, format!("`{field}` takes = != < <= > >=, not `:`")))
}

fn compare(at: usize, c: &Comparison) -> Result<Cond, AipError> {
    let field = c.field.as_str();
    let text_field = match field {
        "email" => Some(TextField::Email),
        "name" => Some(TextField::Name),
        "sender_name" => Some(TextField::SenderName),
        "owner" | "owner_last_name" | "employee" => Some(TextField::Owner),
        _ => None,
    };
    if let Some(f) = text_field {
        let value = text_value(at, field, &c.value)?;
        return match c.op {
            Op::Has => Ok(Cond::Contains(f, value)),
            Op::Eq => Ok(Cond::TextIs(f, value, false)),
            Op::Ne => Ok(Cond::TextIs(f, value, true)),
            _ => Err(filter_error(
                at,
                format!("`{field}` takes `:` (contains), = or !="),
            )),
        };
    }
    Ok(match field {
        "owner_user_id" => {
            Cond::OwnerIs(user_value(at, field, &c.value)?, equality(at, field, c.op)?)
        }
        "last_sync_time" => {
            let cmp = ordering(at, field, c.op)?;
            let text = c.value.as_text();
            let time = DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    filter_error(at, format!("`{field}` takes an RFC 3339 time such as \"2026-01-31T00:00:00Z\", not \"{}\"", shown(&text)))
                })?
                .with_timezone(&Utc);
            Cond::LastSync(cmp, time)
        }
        "days_since_sync" => {
            let cmp = ordering(at, field, c.op)?;
            let days = number_value(at, field, &c.value)?;
            if !(0.0..=36_500.0).contains(&days) || days.fract() != 0.0 {
                return Err(filter_error(
                    at,
                    format!("`{field}` takes whole days from 0 to 36500"),
                ));
            }
            Cond::SyncedDaysAgo(cmp, days as i64)
        }
        "in_crm" => {
            let negated = equality(at, field, c.op)?;
            Cond::InCrm(bool_value(at, field, &c.value)? != negated)
        }
        "owner_dismissed" => {
            let negated = equality(at, field, c.op)?;
            Cond::OwnerDismissed(bool_value(at, field, &c.value)? != negated)
        }
        "access_by" => Cond::AccessBy(user_value(at, field, &c.value)?, equality(at, field, c.op)?),
        "crm_queue" => Cond::QueueHas(user_value(at, field, &c.value)?, equality(at, field, c.op)?),
        "sync_state" => {
            let negated = equality(at, field, c.op)?;
            let text = c.value.as_text();
            let state = SyncState::from_filter(&text).ok_or_else(|| {
                filter_error(at, format!("`sync_state` is one of PENDING, OK, SYNCING, AUTH_FAILED, ERROR, not \"{}\"", shown(&text)))
            })?;
            Cond::State(state, negated)
        }
        "disk_mb" | "unread_count" | "message_count" => {
            let cmp = ordering(at, field, c.op)?;
            let n = number_value(at, field, &c.value)?;
            let (column, value) = match field {
                "disk_mb" => (NumField::DiskBytes, n * 1024.0 * 1024.0),
                "unread_count" => (NumField::Unread, n),
                _ => (NumField::Messages, n),
            };
            if value.abs() > 9.0e15 {
                return Err(filter_error(at, format!("`{field}` is out of range")));
            }
            Cond::Number(column, cmp, value.round() as i64)
        }
        other => {
            return Err(filter_error(
                at,
                format!("unknown field `{}`; filter on {FIELDS}", shown(other)),
            ))
        }
    })
}

impl Cond {
    /// The users named by `access_by`, to be resolved through access control.
    pub fn access_by_users(&self, out: &mut Vec<UserId>) {
        match self {
            Cond::And(parts) | Cond::Or(parts) => parts.iter().for_each(|p| p.access_by_users(out)),
            Cond::Not(inner) => inner.access_by_users(out),
            Cond::AccessBy(user, _) if !out.contains(user) => out.push(*user),
            _ => {}
        }
    }
}

/// Sortable columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortKey {
    Email,
    Name,
    SenderName,
    Owner,
    LastSync,
    State,
    Unread,
    Messages,
    Disk,
    Created,
}

impl SortKey {
    pub const NAMES: &'static str = "email, name, sender_name, owner, last_sync_time, sync_state, unread_count, message_count, disk_mb, create_time";

    fn parse(name: &str) -> Option<SortKey> {
        Some(match name {
            "email" => SortKey::Email,
            "name" => SortKey::Name,
            "sender_name" => SortKey::SenderName,
            "owner" | "employee" | "owner_last_name" => SortKey::Owner,
            "last_sync_time" => SortKey::LastSync,
            "sync_state" => SortKey::State,
            "unread_count" => SortKey::Unread,
            "message_count" => SortKey::Messages,
            "disk_mb" => SortKey::Disk,
            "create_time" => SortKey::Created,
            _ => return None,
        })
    }
}

/// A sort: one column, ascending or descending, ties broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub key: SortKey,
    pub descending: bool,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            key: SortKey::Email,
            descending: false,
        }
    }
}

/// Parses `order_by`: one column, optionally ` desc` or ` asc`.
pub fn parse_order(input: &str) -> Result<Order, AipError> {
    let words: Vec<&str> = input.split_whitespace().collect();
    let (name, descending) = match words.as_slice() {
        [] => return Ok(Order::default()),
        [name] => (*name, false),
        [name, dir] if dir.eq_ignore_ascii_case("desc") => (*name, true),
        [name, dir] if dir.eq_ignore_ascii_case("asc") => (*name, false),
        _ => {
            return Err(AipError::OrderBy(format!(
                "{}` (one column, optionally followed by desc; columns: {})",
                shown(input),
                SortKey::NAMES
            )))
        }
    };
    let key = SortKey::parse(name).ok_or_else(|| {
        AipError::OrderBy(format!(
            "{}` (sort on one of: {})",
            shown(name),
            SortKey::NAMES
        ))
    })?;
    Ok(Order { key, descending })
}

/// Where a page starts: after this sort value and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub value: String,
    pub id: MailboxId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_parses_into_its_typed_condition() {
        let queue = UserId::new();
        let cond = parse_filter(&format!(
            r#"email : "ACME" AND name = "Backup" AND owner : "lee" AND in_crm = true AND disk_mb > 100 AND days_since_sync >= 7 AND sync_state = AUTH_FAILED AND crm_queue = "{queue}""#
        ))
        .unwrap();
        let Some(Cond::And(parts)) = cond else {
            panic!("{cond:?}")
        };
        assert_eq!(parts[0], Cond::Contains(TextField::Email, "acme".into()));
        assert_eq!(
            parts[1],
            Cond::TextIs(TextField::Name, "backup".into(), false)
        );
        assert_eq!(parts[2], Cond::Contains(TextField::Owner, "lee".into()));
        assert_eq!(parts[3], Cond::InCrm(true));
        assert_eq!(
            parts[4],
            Cond::Number(NumField::DiskBytes, Cmp::Gt, 100 * 1024 * 1024)
        );
        assert_eq!(parts[5], Cond::SyncedDaysAgo(Cmp::Ge, 7));
        assert_eq!(parts[6], Cond::State(SyncState::AuthFailed, false));
        assert_eq!(parts[7], Cond::QueueHas(queue, false));
    }

    #[test]
    fn or_not_and_parentheses_keep_their_meaning() {
        let cond =
            parse_filter(r#"NOT in_crm = true OR (disk_mb > 1 AND unread_count = 0)"#).unwrap();
        assert!(matches!(
            cond,
            Some(Cond::Or(_)) | Some(Cond::Not(_)) | Some(Cond::And(_))
        ));
        let cond = parse_filter(r#"in_crm = true AND (sync_state = OK OR sync_state = ERROR)"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            cond,
            Cond::And(vec![
                Cond::InCrm(true),
                Cond::Or(vec![
                    Cond::State(SyncState::Ok, false),
                    Cond::State(SyncState::Error, false)
                ])
            ])
        );
    }

    #[test]
    fn errors_name_the_position_and_what_to_do() {
        let err = parse_filter(r#"email : "a" AND colour = "red""#).unwrap_err();
        assert!(matches!(err, AipError::Filter { at: 16, .. }), "{err:?}");
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        for bad in [
            "in_crm = maybe",
            "disk_mb : 5",
            r#"last_sync_time < "yesterday""#,
            "days_since_sync > 1.5",
            "sync_state = BROKEN",
            "access_by = nobody",
            "email > 3",
            r#"email : "unterminated"#,
        ] {
            assert!(
                matches!(parse_filter(bad), Err(AipError::Filter { .. })),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn caller_values_in_errors_are_bounded() {
        let long = "x".repeat(4_000);
        for filter in [
            format!(r#"owner_user_id = "{long}""#),
            format!(r#"sync_state = "{long}""#),
            format!(r#"disk_mb > "{long}""#),
            format!(r#"last_sync_time < "{long}""#),
            format!(r#"access_by = "{long}""#),
        ] {
            let err = parse_filter(&filter).unwrap_err().to_string();
            assert!(err.len() < 400 && err.contains('…'), "{err}");
        }
    }

    #[test]
    fn orders_parse() {
        assert_eq!(parse_order("").unwrap(), Order::default());
        let o = parse_order("last_sync_time desc").unwrap();
        assert_eq!((o.key, o.descending), (SortKey::LastSync, true));
        assert!(parse_order("password").is_err());
        assert!(parse_order("email desc id").is_err());
    }

    #[test]
    fn access_by_users_are_collected_for_resolution() {
        let a = UserId::new();
        let cond = parse_filter(&format!(r#"access_by = "{a}" OR access_by = "{a}""#))
            .unwrap()
            .unwrap();
        let mut users = Vec::new();
        cond.access_by_users(&mut users);
        assert_eq!(users, vec![a]);
    }
}
