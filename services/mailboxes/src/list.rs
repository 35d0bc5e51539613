//! The mailbox list: a filter parsed into typed conditions, rendered as SQL with every value
//! bound, the caller's scope applied in the same query, a stable sort and keyset pages.
//!
//! No caller text ever becomes SQL text: the filter is parsed by `mailroom_aip` into a tree,
//! each comparison is checked against the fields below and turned into a [`Cond`], and the
//! renderer writes only fixed fragments with `push_bind`. Sorting walks an index ending in
//! `id` (see the migration), so page 100 costs what page 1 does: the page token carries the
//! last row's sort value and id, and the next page starts after them.

use chrono::{DateTime, Utc};
use mailroom_aip::expr::{parse_expr, Expr};
use mailroom_aip::{AipError, Comparison, Op, Value};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::SyncState;
use crate::scope::Scope;

/// The text columns a filter matches, by their case-folded keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Email,
    Name,
    SenderName,
    Owner,
}

impl TextField {
    fn key(self) -> &'static str {
        match self {
            TextField::Email => "email_key",
            TextField::Name => "name_key",
            TextField::SenderName => "sender_name_key",
            TextField::Owner => "owner_key",
        }
    }

    /// The column `=` compares: the whole value (for the owner, the last name).
    fn exact(self) -> &'static str {
        match self {
            TextField::Owner => "lower(owner_last_name)",
            other => other.key(),
        }
    }
}

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
    fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => " = ",
            Cmp::Ne => " <> ",
            Cmp::Lt => " < ",
            Cmp::Le => " <= ",
            Cmp::Gt => " > ",
            Cmp::Ge => " >= ",
        }
    }

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumField {
    DiskBytes,
    Unread,
    Messages,
}

impl NumField {
    fn column(self) -> &'static str {
        match self {
            NumField::DiskBytes => "disk_bytes",
            NumField::Unread => "unread_count",
            NumField::Messages => "message_count",
        }
    }
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
    OwnerIs(Uuid, bool),
    LastSync(Cmp, DateTime<Utc>),
    /// Not synced for more (or less) than some days: a bound on `last_sync_time` relative to
    /// now, computed by the database.
    SyncedDaysAgo(Cmp, i64),
    InCrm(bool),
    OwnerDismissed(bool),
    Number(NumField, Cmp, i64),
    State(SyncState, bool),
    QueueHas(Uuid, bool),
    /// Who may read the mail; resolved through access control before rendering.
    AccessBy(Uuid, bool),
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

fn uuid_value(at: usize, field: &str, value: &Value) -> Result<Uuid, AipError> {
    let text = value.as_text();
    Uuid::parse_str(&text)
        .map_err(|_| filter_error(at, format!("`{field}` takes a user id, not {text:?}")))
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
            .ok_or_else(|| filter_error(at, format!("`{field}` takes a number, not {s:?}"))),
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
            Cond::OwnerIs(uuid_value(at, field, &c.value)?, equality(at, field, c.op)?)
        }
        "last_sync_time" => {
            let cmp = ordering(at, field, c.op)?;
            let text = c.value.as_text();
            let time = DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    filter_error(at, format!("`{field}` takes an RFC 3339 time such as \"2026-01-31T00:00:00Z\", not {text:?}"))
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
        "access_by" => Cond::AccessBy(uuid_value(at, field, &c.value)?, equality(at, field, c.op)?),
        "crm_queue" => Cond::QueueHas(uuid_value(at, field, &c.value)?, equality(at, field, c.op)?),
        "sync_state" => {
            let negated = equality(at, field, c.op)?;
            let text = c.value.as_text();
            let state = SyncState::from_filter(&text).ok_or_else(|| {
                filter_error(at, format!("`sync_state` is one of PENDING, OK, SYNCING, AUTH_FAILED, ERROR, not {text:?}"))
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
                format!("unknown field `{other}`; filter on {FIELDS}"),
            ))
        }
    })
}

impl Cond {
    /// The users named by `access_by`, to be resolved through access control.
    pub fn access_by_users(&self, out: &mut Vec<Uuid>) {
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

    fn column(self) -> &'static str {
        match self {
            SortKey::Email => "email_key",
            SortKey::Name => "name_key",
            SortKey::SenderName => "sender_name_key",
            SortKey::Owner => "owner_key",
            SortKey::LastSync => "last_sync_time",
            SortKey::State => "sync_state",
            SortKey::Unread => "unread_count",
            SortKey::Messages => "message_count",
            SortKey::Disk => "disk_bytes",
            SortKey::Created => "create_time",
        }
    }

    /// The SQL type a cursor value is cast back to.
    fn cast(self) -> &'static str {
        match self {
            SortKey::LastSync | SortKey::Created => "::timestamptz",
            SortKey::Unread | SortKey::Messages | SortKey::Disk => "::bigint",
            _ => "::text",
        }
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
                "{input}` (one column, optionally followed by desc; columns: {})",
                SortKey::NAMES
            )))
        }
    };
    let key = SortKey::parse(name).ok_or_else(|| {
        AipError::OrderBy(format!("{name}` (sort on one of: {})", SortKey::NAMES))
    })?;
    Ok(Order { key, descending })
}

/// Where a page starts: after this sort value and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub value: String,
    pub id: Uuid,
}

/// Read scopes of the users an `access_by` names (from access control).
pub type ReadScopes = Vec<(Uuid, Scope)>;

/// Renders the WHERE clause: organisation, the caller's scope, the filter.
pub fn push_where(
    q: &mut QueryBuilder<'_, Postgres>,
    org: Uuid,
    scope: &Scope,
    filter: Option<&Cond>,
    reads: &ReadScopes,
) {
    q.push(" WHERE org_id = ");
    q.push_bind(org);
    push_scope(q, scope);
    if let Some(cond) = filter {
        q.push(" AND ");
        push_cond(q, cond, reads);
    }
}

fn push_scope(q: &mut QueryBuilder<'_, Postgres>, scope: &Scope) {
    match scope {
        Scope::WholeOrganization => {}
        Scope::Some { owners, mailboxes } => {
            q.push(" AND (owner_user_id = ANY(");
            q.push_bind(owners.clone());
            q.push(") OR id = ANY(");
            q.push_bind(mailboxes.clone());
            q.push("))");
        }
    }
}

/// `%`, `_` and `\` are literal in a substring filter.
fn like_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('%');
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn push_cond(q: &mut QueryBuilder<'_, Postgres>, cond: &Cond, reads: &ReadScopes) {
    match cond {
        Cond::And(parts) | Cond::Or(parts) => {
            let joiner = if matches!(cond, Cond::And(_)) {
                " AND "
            } else {
                " OR "
            };
            q.push("(");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    q.push(joiner);
                }
                push_cond(q, part, reads);
            }
            q.push(")");
        }
        Cond::Not(inner) => {
            q.push("NOT (");
            push_cond(q, inner, reads);
            q.push(")");
        }
        Cond::Contains(field, value) => {
            q.push(field.key());
            q.push(" LIKE ");
            q.push_bind(like_pattern(value));
        }
        Cond::TextIs(field, value, negated) => {
            q.push(field.exact());
            q.push(if *negated { " <> " } else { " = " });
            q.push_bind(value.clone());
        }
        Cond::OwnerIs(user, negated) => {
            q.push("owner_user_id");
            q.push(if *negated { " <> " } else { " = " });
            q.push_bind(*user);
        }
        Cond::LastSync(cmp, time) => {
            q.push("last_sync_time");
            q.push(cmp.sql());
            q.push_bind(*time);
        }
        Cond::SyncedDaysAgo(cmp, days) => {
            // More than N days since the last sync is a last sync before now - N days.
            let flipped = match cmp {
                Cmp::Gt => Cmp::Lt,
                Cmp::Ge => Cmp::Le,
                Cmp::Lt => Cmp::Gt,
                Cmp::Le => Cmp::Ge,
                other => *other,
            };
            if matches!(cmp, Cmp::Eq | Cmp::Ne) {
                // Whole days: synced between N and N+1 days ago.
                q.push(if *cmp == Cmp::Ne { "NOT (" } else { "(" });
                q.push("last_sync_time <= now() - make_interval(days => ");
                q.push_bind(*days as i32);
                q.push(") AND last_sync_time > now() - make_interval(days => ");
                q.push_bind(*days as i32 + 1);
                q.push("))");
            } else {
                q.push("last_sync_time");
                q.push(flipped.sql());
                q.push("now() - make_interval(days => ");
                q.push_bind(*days as i32);
                q.push(")");
            }
        }
        Cond::InCrm(value) => {
            q.push("in_crm = ");
            q.push_bind(*value);
        }
        Cond::OwnerDismissed(value) => {
            q.push("owner_dismissed = ");
            q.push_bind(*value);
        }
        Cond::Number(field, cmp, value) => {
            q.push(field.column());
            q.push(cmp.sql());
            q.push_bind(*value);
        }
        Cond::State(state, negated) => {
            q.push("sync_state");
            q.push(if *negated { " <> " } else { " = " });
            q.push_bind(state.as_str());
        }
        Cond::QueueHas(user, negated) => {
            if *negated {
                q.push("NOT ");
            }
            q.push("crm_queue @> ARRAY[");
            q.push_bind(*user);
            q.push("]::uuid[]");
        }
        Cond::AccessBy(user, negated) => {
            let scope = reads
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(Scope::nothing);
            if *negated {
                q.push("NOT ");
            }
            match scope {
                Scope::WholeOrganization => {
                    q.push("true");
                }
                Scope::Some { owners, mailboxes } => {
                    q.push("(owner_user_id = ANY(");
                    q.push_bind(owners);
                    q.push(") OR id = ANY(");
                    q.push_bind(mailboxes);
                    q.push("))");
                }
            }
        }
    }
}

/// Renders the keyset bound and the order: `(col, id) > (value, id)` ascending, `<`
/// descending, so a page picks up exactly after the previous one.
pub fn push_page(
    q: &mut QueryBuilder<'_, Postgres>,
    order: Order,
    after: Option<&Cursor>,
    limit: i64,
) {
    let column = order.key.column();
    if let Some(cursor) = after {
        q.push(" AND (");
        q.push(column);
        q.push(", id) ");
        q.push(if order.descending { "<" } else { ">" });
        q.push(" (");
        q.push_bind(cursor.value.clone());
        q.push(order.key.cast());
        q.push(", ");
        q.push_bind(cursor.id);
        q.push(")");
    }
    let dir = if order.descending { " DESC" } else { " ASC" };
    q.push(" ORDER BY ");
    q.push(column);
    q.push(dir);
    q.push(", id");
    q.push(dir);
    q.push(" LIMIT ");
    q.push_bind(limit);
}

/// The sort value of a row as the cursor keeps it (selected as text, cast back on the way in).
pub fn sort_value_sql(order: Order) -> String {
    format!("{}::text AS sort_value", order.key.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(filter: &str) -> String {
        let cond = parse_filter(filter).unwrap();
        let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM mailboxes");
        push_where(
            &mut q,
            Uuid::nil(),
            &Scope::WholeOrganization,
            cond.as_ref(),
            &Vec::new(),
        );
        q.sql().to_owned()
    }

    #[test]
    fn every_seed_field_parses_into_bound_sql() {
        let s = sql(
            r#"email : "acme" AND name = "Backup" AND owner : "lee" AND in_crm = true AND disk_mb > 100 AND sender_name : "Sales" AND last_sync_time < "2026-01-01T00:00:00Z" AND days_since_sync >= 7 AND sync_state = AUTH_FAILED AND crm_queue = "7f1c0f4e-1b2a-4c3d-9e8f-0a1b2c3d4e5f""#,
        );
        assert!(s.contains("email_key LIKE $2"), "{s}");
        assert!(s.contains("name_key = $3"), "{s}");
        assert!(s.contains("disk_bytes > $"), "{s}");
        assert!(s.contains("last_sync_time <= now() - make_interval"), "{s}");
        assert!(
            !s.contains("acme") && !s.contains("Backup"),
            "values are bound, never inlined: {s}"
        );
    }

    #[test]
    fn hostile_values_stay_values() {
        let s = sql(r#"name : "x'); DROP TABLE mailboxes; --""#);
        assert!(!s.contains("DROP"), "{s}");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn or_not_and_parentheses_keep_their_meaning() {
        let cond =
            parse_filter(r#"NOT in_crm = true OR (disk_mb > 1 AND unread_count = 0)"#).unwrap();
        assert!(matches!(
            cond,
            Some(Cond::Or(_)) | Some(Cond::Not(_)) | Some(Cond::And(_))
        ));
        let s = sql(r#"in_crm = true AND (sync_state = OK OR sync_state = ERROR)"#);
        assert!(s.contains("(sync_state = $3 OR sync_state = $4)"), "{s}");
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
    fn orders_parse_and_pages_continue_after_the_cursor() {
        assert_eq!(parse_order("").unwrap(), Order::default());
        let o = parse_order("last_sync_time desc").unwrap();
        assert_eq!((o.key, o.descending), (SortKey::LastSync, true));
        assert!(parse_order("password").is_err());
        assert!(parse_order("email desc id").is_err());
        let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM mailboxes WHERE true");
        let cursor = Cursor {
            value: "2026-01-01".into(),
            id: Uuid::nil(),
        };
        push_page(&mut q, o, Some(&cursor), 51);
        let s = q.sql();
        assert!(
            s.contains("(last_sync_time, id) < ($1::timestamptz, $2)"),
            "{s}"
        );
        assert!(
            s.contains("ORDER BY last_sync_time DESC, id DESC LIMIT $3"),
            "{s}"
        );
    }

    #[test]
    fn access_by_users_are_collected_for_resolution() {
        let a = Uuid::new_v4();
        let cond = parse_filter(&format!(r#"access_by = "{a}" OR access_by = "{a}""#))
            .unwrap()
            .unwrap();
        let mut users = Vec::new();
        cond.access_by_users(&mut users);
        assert_eq!(users, vec![a]);
    }
}
