//! Any bytes as a list filter and order: the AIP-160 parser (every list's), the AND-only form,
//! the mailbox list's typed compilation and its SQL.
//!
//! Asserted: nothing panics, loops or blows the stack; an error's position lies within the
//! input and its message is bounded and free of control characters whatever the caller sent
//! (issue 20, item 11); a filter that compiles renders to SQL made of fixed fragments only —
//! the same SQL text whatever the values compared (they are bound parameters), and no
//! character outside the fragments' alphabet (no quote, semicolon or comment).

use mailroom_aip::AipError;
use mailroom_mailboxes::list::{self, Cond};
use mailroom_mailboxes::scope::Scope;
use mailroom_mailboxes::store::list_query;
use sqlx::{Postgres, QueryBuilder};

use crate::assert_shown_safely;

/// The longest error message a filter or order may produce, in characters: the fixed words,
/// and at most `SHOWN_MAX` characters of caller text, each escaped to at most 10 (`\u{10ffff}`).
const MAX_MESSAGE: usize = 400 + 10 * mailroom_aip::SHOWN_MAX;

pub fn list_filter(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let input = input.as_ref();

    check_result(input, mailroom_aip::expr::parse_expr(input).map(|_| ()));
    check_result(input, mailroom_aip::parse_filter(input).map(|_| ()));
    check_result(input, list::parse_order(input).map(|_| ()));
    check_result(
        input,
        mailroom_aip::parse_order(input, (), |name, _| (name == "email").then_some(())),
    );
    match list::parse_filter(input) {
        Ok(Some(cond)) => {
            let sql = render(&cond);
            assert!(
                sql.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" _()=<>$,.@:[]*-".contains(&b)),
                "a character outside the SQL fragments reached the SQL text: {sql}"
            );
            let blank = render(&blanked(&cond));
            assert_eq!(
                sql, blank,
                "the SQL text depends on the values compared, not only on the fields"
            );
        }
        other => check_result(input, other.map(|_| ())),
    }
}

fn check_result(input: &str, result: Result<(), AipError>) {
    let Err(err) = result else {
        return;
    };
    if let AipError::Filter { at, .. } = &err {
        assert!(
            *at <= input.len(),
            "error position {at} beyond the input ({} bytes)",
            input.len()
        );
    }
    assert_shown_safely(&err.to_string(), MAX_MESSAGE, input);
}

fn render(cond: &Cond) -> String {
    let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM mailboxes");
    list_query::push_where(
        &mut q,
        Default::default(),
        &Scope::WholeOrganization,
        Some(cond),
        &Vec::new(),
    );
    q.sql().to_owned()
}

/// The same conditions with every caller-chosen text and number replaced.
fn blanked(cond: &Cond) -> Cond {
    match cond {
        Cond::And(parts) => Cond::And(parts.iter().map(blanked).collect()),
        Cond::Or(parts) => Cond::Or(parts.iter().map(blanked).collect()),
        Cond::Not(inner) => Cond::Not(Box::new(blanked(inner))),
        Cond::Contains(field, _) => Cond::Contains(*field, "x".into()),
        Cond::TextIs(field, _, negated) => Cond::TextIs(*field, "x".into(), *negated),
        Cond::Number(field, cmp, _) => Cond::Number(*field, *cmp, 0),
        Cond::SyncedDaysAgo(cmp, _) => Cond::SyncedDaysAgo(*cmp, 0),
        other => other.clone(),
    }
}
