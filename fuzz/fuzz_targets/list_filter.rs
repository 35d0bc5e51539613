//! Any bytes as a mailbox-list filter: the AIP-160 parser and the typed compilation must
//! never panic, loop or blow the stack, whatever a caller sends; what they accept must render
//! to SQL whose only caller-derived parts are bound parameters, never text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_mailboxes::list;
use mailroom_mailboxes::scope::Scope;
use mailroom_mailboxes::store::list_query;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    // The generic tree (every list's parser) and the AND-only form.
    let _ = mailroom_aip::expr::parse_expr(input);
    let _ = mailroom_aip::parse_filter(input);
    let _ = list::parse_order(input);
    match list::parse_filter(input) {
        Ok(Some(cond)) => {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT id FROM mailboxes");
            list_query::push_where(&mut q, Default::default(), &Scope::WholeOrganization, Some(&cond), &Vec::new());
            let sql = q.sql();
            // Only our fragments: no quote a caller could have smuggled in.
            assert!(!sql.contains('\''), "caller text reached SQL: {sql}");
            assert!(!sql.contains(';'), "caller text reached SQL: {sql}");
        }
        Ok(None) => {}
        Err(mailroom_aip::AipError::Filter { at, .. }) => {
            assert!(at <= input.len(), "error position {at} beyond the input ({})", input.len());
        }
        Err(_) => {}
    }
});
