//! The mailbox list's SQL: a parsed filter ([`crate::list::Cond`]) and the caller's scope
//! rendered into one query with every value bound, a stable sort, keyset pages and the
//! `total_size` count.
//!
//! Only fixed fragments are written as SQL text; every value a caller chose goes through
//! `push_bind`. Sorting walks an index ending in `id` (see the migration), so page 100 costs
//! what page 1 does: a [`Cursor`] carries the last row's sort value (as text, cast back to
//! the column's type) and id, and the next page starts after them. Up to
//! [`EXACT_COUNT_UP_TO`] matches are counted exactly; above, the total is estimated, so a
//! count never scans a large organisation.
//!
//! A caller whose scope is a set of owners (a supervisor: thousands of them) is answered by
//! two statements run at once on two connections ([`ListQuery::page`]), each binding the
//! owner array once: the page (`owner_user_id = ANY($1)`, which PostgreSQL tests with a
//! hash, and whose planning estimates the array element by element: about 5 ms for 11k
//! owners) and the count, which joins the array as rows (planned in a fraction of a
//! millisecond), walks the owners in a fixed order that has nothing to do with when they
//! were made ([`sample_order`]) and stops at the [`EXACT_COUNT_UP_TO`]-plus-first match.
//! Side by side the call costs the slower of the two, not their sum (one statement holding
//! both measured 19 ms of PostgreSQL's time where the two apart take 8 and 10 ms).
//! When the count stops early, the owners it got through are a sample of them all, and the
//! total is estimated from it (matches per owner walked, times owners). The statements are
//! not kept prepared: a plan kept for a generic array would fit one scope size and not the
//! next.
//! The whole organisation (an admin) has no array: its page and count run side by side and
//! PostgreSQL's plan estimates a total above [`EXACT_COUNT_UP_TO`].

use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments as _, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

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

/// What the scoped count found: matches of the owners' mailboxes (at most
/// [`EXACT_COUNT_UP_TO`] + 1), how many owners it walked to find them, and matches among the
/// mailboxes shared one by one (not the owners').
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct Counted {
    owned: i64,
    owners_seen: i64,
    shared: i64,
}

impl ListQuery<'_> {
    /// Up to `page_size` rows after `after` (from the start without one), with the total.
    pub async fn page(
        &self,
        pool: &PgPool,
        after: Option<&Cursor>,
        page_size: i64,
    ) -> Result<Page> {
        match self.scope {
            Scope::WholeOrganization => self.organization_page(pool, after, page_size).await,
            Scope::Some { owners, mailboxes } => {
                self.scoped_page(pool, owners, mailboxes, after, page_size)
                    .await
            }
        }
    }

    /// The whole organisation's page: the page and the bounded count side by side, and
    /// PostgreSQL's estimate above the bound.
    async fn organization_page(
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

        let (rows, mut total) = futures::future::try_join(
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
        Ok(Page::of(rows, page_size, total, estimated))
    }

    /// A scoped caller's page and count: two statements on two connections at once, each
    /// with the scope bound once (`$1` the owners, `$2` the mailboxes shared one by one, `$3`
    /// the organisation). Side by side the call takes what the slower of them takes (the
    /// count) instead of their sum: the page's planning, which estimates the owner array
    /// element by element, overlaps the count's walk.
    async fn scoped_page(
        &self,
        pool: &PgPool,
        owners: &[UserId],
        mailboxes: &[MailboxId],
        after: Option<&Cursor>,
        page_size: i64,
    ) -> Result<Page> {
        let owners = sample_order(owners);
        let mut shared = MailboxId::uuids(mailboxes);
        shared.sort_unstable();
        shared.dedup();
        if owners.is_empty() && shared.is_empty() {
            return Ok(Page::of(Vec::new(), page_size, 0, false));
        }
        let owner_count = owners.len();
        let mut page =
            self.scoped_page_query(owners.clone(), shared.clone(), after, page_size + 1)?;
        let mut count = self.scoped_count_query(owners, shared)?;
        let (rows, counted) = futures::future::try_join(
            page.build_query_as::<ListedRow>()
                .persistent(false)
                .fetch_all(pool),
            count
                .build_query_as::<Counted>()
                .persistent(false)
                .fetch_one(pool),
        )
        .await?;
        // The two read apart: a mailbox added or removed between them can leave the count
        // one off, never below what this page shows.
        let (mut total, estimated) = counted.total(owner_count);
        if !estimated {
            let shown = rows.len().min(usize::try_from(page_size).unwrap_or(0));
            total = total.max(i64::try_from(shown).unwrap_or(i64::MAX));
        }
        Ok(Page::of(rows, page_size, total, estimated))
    }

    /// The scoped page: up to `limit` rows after `after`, the scope bound once.
    fn scoped_page_query(
        &self,
        owners: Vec<Uuid>,
        shared: Vec<Uuid>,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<QueryBuilder<'static, Postgres>> {
        let mut q = self.scoped_statement(owners, shared)?;
        q.push(format!(
            "SELECT {COLUMNS}, {} FROM mailboxes",
            sort_value_sql(self.order)
        ));
        self.push_scoped_where(&mut q);
        push_page(&mut q, self.order, after, limit);
        Ok(q)
    }

    /// The scoped count (`owned`, `owners_seen`, `shared`), the scope bound once.
    fn scoped_count_query(
        &self,
        owners: Vec<Uuid>,
        shared: Vec<Uuid>,
    ) -> Result<QueryBuilder<'static, Postgres>> {
        let mut q = self.scoped_statement(owners, shared)?;
        q.push("SELECT counted.owned, counted.owners_seen, counted.shared FROM ");
        self.push_counted(&mut q);
        q.push(" AS counted");
        Ok(q)
    }

    /// A statement with the scope bound first, as `$1` (owners), `$2` (shared mailboxes)
    /// and `$3` (the organisation), for the text to name as often as it needs.
    fn scoped_statement(
        &self,
        owners: Vec<Uuid>,
        shared: Vec<Uuid>,
    ) -> Result<QueryBuilder<'static, Postgres>> {
        let mut args = PgArguments::default();
        args.add(owners).map_err(sqlx::Error::Encode)?;
        args.add(shared).map_err(sqlx::Error::Encode)?;
        args.add(self.org).map_err(sqlx::Error::Encode)?;
        Ok(QueryBuilder::with_arguments("", args))
    }

    /// The scoped WHERE clause, naming the bound scope.
    fn push_scoped_where(&self, q: &mut QueryBuilder<'_, Postgres>) {
        let shared = matches!(self.scope, Scope::Some { mailboxes, .. } if !mailboxes.is_empty());
        q.push(if shared {
            " WHERE org_id = $3 AND (owner_user_id = ANY($1) OR id = ANY($2))"
        } else {
            " WHERE org_id = $3 AND owner_user_id = ANY($1)"
        });
        if let Some(cond) = self.filter {
            q.push(" AND ");
            push_cond(q, cond, self.reads);
        }
    }

    /// The scoped count, a one-row relation (`owned`, `owners_seen`, `shared`): the owners'
    /// matching mailboxes, the owners walked in the bound order until the bound is passed;
    /// then the matching mailboxes shared one by one whose owner is not one of them.
    fn push_counted(&self, q: &mut QueryBuilder<'_, Postgres>) {
        q.push(
            "(SELECT owned.n AS owned, owned.seen AS owners_seen, shared.n AS shared FROM \
             (SELECT count(*) AS n, coalesce(max(matching.ord), 0) AS seen FROM \
             (SELECT scope.ord FROM unnest($1::uuid[]) WITH ORDINALITY AS scope(owner, ord) \
             JOIN mailboxes ON mailboxes.org_id = $3 AND mailboxes.owner_user_id = scope.owner",
        );
        if let Some(cond) = self.filter {
            q.push(" WHERE ");
            push_cond(q, cond, self.reads);
        }
        q.push(" ORDER BY scope.ord LIMIT ");
        q.push_bind(EXACT_COUNT_UP_TO + 1);
        q.push(
            ") AS matching) AS owned, \
             (SELECT count(*) AS n FROM (SELECT 1 FROM mailboxes \
             WHERE org_id = $3 AND id = ANY($2) AND NOT EXISTS \
             (SELECT 1 FROM unnest($1::uuid[]) AS scope(owner) WHERE scope.owner = mailboxes.owner_user_id)",
        );
        if let Some(cond) = self.filter {
            q.push(" AND ");
            push_cond(q, cond, self.reads);
        }
        q.push(" LIMIT ");
        q.push_bind(EXACT_COUNT_UP_TO + 1);
        q.push(") AS matching) AS shared)");
    }

    /// The WHERE clause of this question.
    pub fn push_where(&self, q: &mut QueryBuilder<'_, Postgres>) {
        push_where(q, self.org, self.scope, self.filter, self.reads);
    }
}

impl Page {
    /// A page from `rows` fetched one past `page_size` (that one only tells whether more
    /// follow).
    fn of(mut rows: Vec<ListedRow>, page_size: i64, total: i64, estimated: bool) -> Page {
        let more = rows.len() as i64 > page_size;
        rows.truncate(usize::try_from(page_size).unwrap_or(0));
        let next = if more {
            rows.last().map(ListedRow::cursor)
        } else {
            None
        };
        Page {
            rows,
            next,
            total,
            estimated,
        }
    }
}

impl Counted {
    /// The total and whether it is an estimate, for a scope of `owners` owners: exact up to
    /// [`EXACT_COUNT_UP_TO`]; above, the owners' matches found per owner walked, times the
    /// owners, plus the shared mailboxes' (never less than the bound).
    fn total(self, owners: usize) -> (i64, bool) {
        let Counted {
            owned,
            owners_seen,
            shared,
        } = self;
        if owned + shared <= EXACT_COUNT_UP_TO {
            return (owned + shared, false);
        }
        let owned = if owned > EXACT_COUNT_UP_TO && owners_seen > 0 {
            (owned as f64 * owners as f64 / owners_seen as f64).round() as i64
        } else {
            owned
        };
        ((owned + shared).max(EXACT_COUNT_UP_TO + 1), true)
    }
}

/// The owners once each, in the order the scoped count walks them: by their ids' last bytes,
/// which are random in every UUID version we make (v4, and v7 after its timestamp), so the
/// first owners walked are not the oldest or newest but a fair sample, and the order (and
/// with it an estimate) is the same on every call.
pub fn sample_order(owners: &[UserId]) -> Vec<Uuid> {
    let mut ids = UserId::uuids(owners);
    ids.sort_unstable_by_key(|id| id.as_u128().swap_bytes());
    ids.dedup();
    ids
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
    fn a_scoped_caller_binds_the_scope_once_in_each_of_page_and_count() {
        let owners = vec![UserId::new(), UserId::new()];
        let shared = vec![MailboxId::new()];
        let scope = Scope::Some {
            owners: owners.clone(),
            mailboxes: shared.clone(),
        };
        let cond = parse_filter(r#"in_crm = true AND owner : "lee""#).unwrap();
        let reads = Vec::new();
        let query = ListQuery {
            org: OrgId::new(),
            scope: &scope,
            filter: cond.as_ref(),
            reads: &reads,
            order: parse_order("owner").unwrap(),
        };
        let page = query
            .scoped_page_query(sample_order(&owners), MailboxId::uuids(&shared), None, 51)
            .unwrap();
        let count = query
            .scoped_count_query(sample_order(&owners), MailboxId::uuids(&shared))
            .unwrap();
        let (page, count) = (page.sql(), count.sql());
        // The owners are `$1` everywhere: the count's walk, the shared mailboxes' exclusion
        // and the page; nothing else is an array parameter.
        assert!(
            count.contains("unnest($1::uuid[]) WITH ORDINALITY AS scope(owner, ord)"),
            "{count}"
        );
        assert!(
            page.contains(
                "WHERE org_id = $3 AND (owner_user_id = ANY($1) OR id = ANY($2)) AND (in_crm = $"
            ),
            "{page}"
        );
        assert_eq!(page.matches("ANY($").count(), 2, "{page}");
        assert_eq!(count.matches("ANY($").count(), 1, "{count}");
        let names_owners = |s: &str| {
            s.match_indices("$1")
                .filter(|(at, _)| !s[at + 2..].starts_with(|c: char| c.is_ascii_digit()))
                .count()
        };
        assert_eq!(names_owners(page), 1, "{page}");
        assert_eq!(names_owners(count), 2, "{count}");
        assert!(!page.contains("EXPLAIN") && !count.contains("EXPLAIN"));
        assert!(
            page.contains("ORDER BY owner_key ASC, id ASC LIMIT $"),
            "{page}"
        );
    }

    #[test]
    fn owners_are_walked_once_each_in_an_order_unrelated_to_age() {
        let made: Vec<UserId> = (0..200).map(|_| UserId::new()).collect();
        let mut twice = made.clone();
        twice.extend(made.iter().rev().copied());
        let order = sample_order(&twice);
        assert_eq!(order.len(), made.len(), "each owner once");
        assert_eq!(order, sample_order(&made), "the same order every call");
        // v7 ids grow with time; the walk must not be oldest first.
        let oldest_first: Vec<Uuid> = UserId::uuids(&made);
        assert_ne!(order, oldest_first);
        let early = order[..20]
            .iter()
            .filter(|id| oldest_first[..100].contains(id))
            .count();
        assert!((1..=19).contains(&early), "{early} of the first 20 are old");
    }

    #[test]
    fn totals_are_exact_up_to_the_bound_and_sampled_above() {
        let counted = |owned, owners_seen, shared| Counted {
            owned,
            owners_seen,
            shared,
        };
        assert_eq!(counted(0, 0, 0).total(10), (0, false));
        assert_eq!(counted(700, 9_000, 300).total(9_000), (1_000, false));
        // 1,001 matches among the first 1,759 of 11,111 owners.
        let (total, estimated) = counted(1_001, 1_759, 0).total(11_111);
        assert!(estimated);
        assert_eq!(total, 6_323);
        // Exact parts whose sum passes the bound are shown as the bound's other side.
        assert_eq!(counted(900, 50, 200).total(50), (1_100, true));
        // Never below the bound once past it.
        assert_eq!(counted(1_001, 11_111, 0).total(11_111), (1_001, true));
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
