//! The mailbox list's SQL: a parsed filter ([`crate::list::Cond`]) and the caller's scope
//! rendered into one query with every value bound, a stable sort, keyset pages and the
//! `total_size` count.
//!
//! Only fixed fragments are written as SQL text; every value a caller chose goes through
//! `push_bind`. Sorting walks an index ending in `id` (see the migration), so page 100 costs
//! what page 1 does: a [`Cursor`] carries the last row's sort value (as text, cast back to
//! the column's type) and id, and the next page starts after them. Up to
//! [`EXACT_COUNT_UP_TO`] matches are counted exactly; above, PostgreSQL's plan estimates the
//! total, so a count never scans a large organisation.

use mailroom_types::{OrgId, UserId};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::{MailboxRow, COLUMNS};
use crate::error::Result;
use crate::list::{Cmp, Cond, Cursor, NumField, Order, SortKey, TextField};
use crate::scope::Scope;

/// Up to this many matches `total_size` is counted exactly; above, PostgreSQL estimates it.
pub const EXACT_COUNT_UP_TO: i64 = 1_000;

/// Read scopes of the users an `access_by` names (from access control).
pub type ReadScopes = Vec<(UserId, Scope)>;

/// One list question: whose rows, which of them, in what order.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub org: OrgId,
    /// Where the caller's `mailbox.view` reaches.
    pub scope: &'a Scope,
    pub filter: Option<&'a Cond>,
    /// The scopes of the users the filter's `access_by` names.
    pub reads: &'a ReadScopes,
    pub order: Order,
}

/// A listed row with its sort value (for the next page's cursor).
#[derive(Debug, sqlx::FromRow)]
pub struct ListedRow {
    #[sqlx(flatten)]
    pub row: MailboxRow,
    pub sort_value: String,
}

impl ListedRow {
    /// Where the page after this row starts.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            value: self.sort_value.clone(),
            id: self.row.id,
        }
    }
}

/// One page of the list and how many rows match in all.
#[derive(Debug)]
pub struct Page {
    pub rows: Vec<ListedRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    pub total: i64,
    /// Whether `total` is PostgreSQL's estimate (more than [`EXACT_COUNT_UP_TO`] match).
    pub estimated: bool,
}

impl ListQuery<'_> {
    /// Up to `page_size` rows after `after` (from the start without one), with the total.
    pub async fn page(
        &self,
        pool: &PgPool,
        after: Option<&Cursor>,
        page_size: i64,
    ) -> Result<Page> {
        let mut page: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {COLUMNS}, {} FROM mailboxes",
            sort_value_sql(self.order)
        ));
        self.push_where(&mut page);
        push_page(&mut page, self.order, after, page_size + 1);
        let mut count: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM mailboxes");
        self.push_where(&mut count);
        count.push(" LIMIT ");
        count.push_bind(EXACT_COUNT_UP_TO + 1);
        count.push(") AS matching");

        let (mut rows, mut total) = futures::future::try_join(
            page.build_query_as::<ListedRow>().fetch_all(pool),
            count.build_query_scalar::<i64>().fetch_one(pool),
        )
        .await?;
        let estimated = total > EXACT_COUNT_UP_TO;
        if estimated {
            let mut explain: QueryBuilder<Postgres> =
                QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM mailboxes");
            self.push_where(&mut explain);
            let plan: sqlx::types::Json<serde_json::Value> =
                explain.build_query_scalar().fetch_one(pool).await?;
            let rows = plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64;
            total = rows.max(EXACT_COUNT_UP_TO + 1);
        }
        let more = rows.len() as i64 > page_size;
        rows.truncate(usize::try_from(page_size).unwrap_or(0));
        let next = if more {
            rows.last().map(ListedRow::cursor)
        } else {
            None
        };
        Ok(Page {
            rows,
            next,
            total,
            estimated,
        })
    }

    /// The WHERE clause of this question.
    pub fn push_where(&self, q: &mut QueryBuilder<'_, Postgres>) {
        push_where(q, self.org, self.scope, self.filter, self.reads);
    }
}

/// Renders the WHERE clause: organisation, the caller's scope, the filter.
pub fn push_where(
    q: &mut QueryBuilder<'_, Postgres>,
    org: OrgId,
    scope: &Scope,
    filter: Option<&Cond>,
    reads: &ReadScopes,
) {
    q.push(" WHERE org_id = ");
    q.push_bind(org);
    if let Scope::Some { .. } = scope {
        q.push(" AND ");
        push_scope(q, scope);
    }
    if let Some(cond) = filter {
        q.push(" AND ");
        push_cond(q, cond, reads);
    }
}

/// The rows a scope covers (`true` for the whole organisation).
fn push_scope(q: &mut QueryBuilder<'_, Postgres>, scope: &Scope) {
    match scope {
        Scope::WholeOrganization => {
            q.push("true");
        }
        Scope::Some { owners, mailboxes } => {
            q.push("(owner_user_id = ANY(");
            q.push_bind(owners.clone());
            q.push(") OR id = ANY(");
            q.push_bind(mailboxes.clone());
            q.push("))");
        }
    }
}

/// The case-folded column a text field's `:` matches.
fn text_key(field: TextField) -> &'static str {
    match field {
        TextField::Email => "email_key",
        TextField::Name => "name_key",
        TextField::SenderName => "sender_name_key",
        TextField::Owner => "owner_key",
    }
}

/// The column a text field's `=` compares: the whole value (for the owner, the last name).
fn text_exact(field: TextField) -> &'static str {
    match field {
        TextField::Owner => "lower(owner_last_name)",
        other => text_key(other),
    }
}

fn number_column(field: NumField) -> &'static str {
    match field {
        NumField::DiskBytes => "disk_bytes",
        NumField::Unread => "unread_count",
        NumField::Messages => "message_count",
    }
}

fn cmp_sql(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::Eq => " = ",
        Cmp::Ne => " <> ",
        Cmp::Lt => " < ",
        Cmp::Le => " <= ",
        Cmp::Gt => " > ",
        Cmp::Ge => " >= ",
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
            q.push(text_key(*field));
            q.push(" LIKE ");
            q.push_bind(like_pattern(value));
        }
        Cond::TextIs(field, value, negated) => {
            q.push(text_exact(*field));
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
            q.push(cmp_sql(*cmp));
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
                q.push(cmp_sql(flipped));
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
            q.push(number_column(*field));
            q.push(cmp_sql(*cmp));
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
            push_scope(q, &scope);
        }
    }
}

/// The column a sort walks.
fn sort_column(key: SortKey) -> &'static str {
    match key {
        SortKey::Email => "email_key",
        SortKey::Name => "name_key",
        SortKey::SenderName => "sender_name_key",
        SortKey::Owner => "owner_key",
        // The stored column (qualified: the select list's `last_sync_time` is NULL until the
        // first sync), so never-synced mailboxes hold `-infinity`: the stalest sort first
        // ascending and last descending, and the cursor compares what the order sorts by.
        SortKey::LastSync => "mailboxes.last_sync_time",
        SortKey::State => "sync_state",
        SortKey::Unread => "unread_count",
        SortKey::Messages => "message_count",
        SortKey::Disk => "disk_bytes",
        SortKey::Created => "create_time",
    }
}

/// The SQL type a cursor value is cast back to.
fn sort_cast(key: SortKey) -> &'static str {
    match key {
        SortKey::LastSync | SortKey::Created => "::timestamptz",
        SortKey::Unread | SortKey::Messages | SortKey::Disk => "::bigint",
        _ => "::text",
    }
}

/// Renders the keyset bound and the order: `(col, id) > (value, id)` ascending, `<`
/// descending, so a page picks up exactly after the previous one. The order and the bound
/// name the same stored column ([`sort_column`]), never a select-list alias.
pub fn push_page(
    q: &mut QueryBuilder<'_, Postgres>,
    order: Order,
    after: Option<&Cursor>,
    limit: i64,
) {
    let column = sort_column(order.key);
    if let Some(cursor) = after {
        q.push(" AND (");
        q.push(column);
        q.push(", id) ");
        q.push(if order.descending { "<" } else { ">" });
        q.push(" (");
        q.push_bind(cursor.value.clone());
        q.push(sort_cast(order.key));
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
    format!("{}::text AS sort_value", sort_column(order.key))
}

#[cfg(test)]
mod tests {
    use mailroom_types::MailboxId;

    use super::*;
    use crate::list::{parse_filter, parse_order};

    fn sql(filter: &str) -> String {
        let cond = parse_filter(filter).unwrap();
        let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM mailboxes");
        push_where(
            &mut q,
            OrgId::default(),
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
    fn or_and_parentheses_render_as_written() {
        let s = sql(r#"in_crm = true AND (sync_state = OK OR sync_state = ERROR)"#);
        assert!(s.contains("(sync_state = $3 OR sync_state = $4)"), "{s}");
    }

    #[test]
    fn a_scope_and_access_by_render_as_owner_or_mailbox_sets() {
        let reader = UserId::new();
        let scope = Scope::Some {
            owners: vec![UserId::new()],
            mailboxes: vec![MailboxId::new()],
        };
        let cond = parse_filter(&format!(r#"NOT access_by = "{reader}""#)).unwrap();
        let reads = vec![(reader, Scope::WholeOrganization)];
        let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM mailboxes");
        push_where(&mut q, OrgId::new(), &scope, cond.as_ref(), &reads);
        assert_eq!(
            q.sql(),
            "SELECT id FROM mailboxes WHERE org_id = $1 AND (owner_user_id = ANY($2) OR id = ANY($3)) AND NOT (true)"
        );
    }

    #[test]
    fn pages_continue_after_the_cursor() {
        let o = parse_order("last_sync_time desc").unwrap();
        let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM mailboxes WHERE true");
        let cursor = Cursor {
            value: "2026-01-01".into(),
            id: MailboxId::default(),
        };
        push_page(&mut q, o, Some(&cursor), 51);
        let s = q.sql();
        assert!(
            s.contains("(mailboxes.last_sync_time, id) < ($1::timestamptz, $2)"),
            "{s}"
        );
        assert!(
            s.contains("ORDER BY mailboxes.last_sync_time DESC, id DESC LIMIT $3"),
            "{s}"
        );
    }
}
