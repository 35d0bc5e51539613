//! `mailroom ctl mailboxes list` and `mailboxes view`: the list the admin sees, with chosen
//! columns (the registry's own names), filter and sort, and the saved list view that chooses
//! them by default.

use anyhow::Context;
use clap::{Args, Subcommand};
// The list's columns, in the list view's names (the registry's own list).
use mailroom_mailboxes::view::COLUMN_NAMES as COLUMNS;
use mailroom_platform::proto::mailboxes::v1 as mpb;
use serde_json::{json, Value};

use super::{owner_cell, state_name};
use crate::ctl::{Answer, Clients};
use crate::output::{time, Clock, Rows};

// The flags of `mailboxes list` (its help is the variant's).
#[derive(Args)]
pub struct ListArgs {
    /// Columns, comma separated: employee, email, name, sender_name, last_sync_time,
    /// sync_state, unread_count, message_count, disk_mb, in_crm, crm_queue, access_by
    /// (default: your saved list view).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// e.g. 'in_crm = true AND days_since_sync > 7'
    #[arg(long, default_value = "")]
    filter: String,
    /// A column, optionally followed by ` desc`.
    #[arg(long, default_value = "")]
    sort: String,
    #[arg(long, default_value_t = 0)]
    page_size: i32,
    #[arg(long, default_value = "")]
    page_token: String,
}

#[derive(Subcommand)]
pub enum ViewCommand {
    Get,
    Set {
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, default_value = "")]
        sort: String,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
}

fn cell(m: &mpb::Mailbox, column: &str) -> Value {
    match column {
        "employee" => json!(owner_cell(m)),
        "email" => json!(m.email),
        "name" => json!(m.name),
        "sender_name" => json!(m.sender_name),
        "last_sync_time" => match time(m.last_sync_time.as_ref(), Clock::Rfc3339) {
            never if never.is_empty() => json!("never"),
            at => json!(at),
        },
        "sync_state" => json!(state_name(m)),
        "unread_count" => json!(m.unread_count),
        "message_count" => json!(m.message_count),
        "disk_mb" => json!((m.disk_mb * 10.0).round() / 10.0),
        "in_crm" => json!(m.crm.as_ref().is_some_and(|c| c.in_crm)),
        "crm_queue" => json!(m
            .crm
            .as_ref()
            .map(|c| c.queue_user_ids.join(" "))
            .unwrap_or_default()),
        "access_by" => json!(m.access_by_user_ids.join(" ")),
        _ => Value::Null,
    }
}

fn static_column(name: &str) -> anyhow::Result<&'static str> {
    COLUMNS
        .iter()
        .find(|c| **c == name.trim())
        .copied()
        .with_context(|| format!("unknown column `{name}`; columns: {}", COLUMNS.join(", ")))
}

/// The list with the chosen columns (by default the saved view's), filtered and sorted.
pub(super) async fn list(c: &mut Clients, args: ListArgs) -> anyhow::Result<Rows> {
    let ListArgs {
        columns,
        filter,
        sort,
        page_size,
        page_token,
    } = args;
    let columns: Vec<String> = if columns.is_empty() {
        let request = c.request(mpb::GetListViewRequest {});
        c.mailboxes.get_list_view(request).await.answer()?.columns
    } else {
        columns
    };
    let chosen: Vec<&'static str> = columns
        .iter()
        .map(|n| static_column(n))
        .collect::<anyhow::Result<_>>()?;
    let mut shown = vec!["id"];
    shown.extend(chosen.iter().copied());
    let request = c.request(mpb::ListMailboxesRequest {
        page_size,
        page_token,
        filter,
        order_by: sort,
        read_mask: Some(prost_types::FieldMask {
            paths: chosen.iter().map(|s| (*s).to_owned()).collect(),
        }),
        org_id: String::new(),
    });
    let listed = c.mailboxes.list_mailboxes(request).await.answer()?;
    let mut rows = Rows::new("mailboxes", shown.clone());
    rows.rows = listed
        .mailboxes
        .iter()
        .map(|m| {
            std::iter::once(json!(m.id))
                .chain(chosen.iter().map(|col| cell(m, col)))
                .collect()
        })
        .collect();
    rows.footer = vec![
        ("total_size", json!(listed.total_size)),
        ("next_page_token", json!(listed.next_page_token)),
    ];
    Ok(rows)
}

/// Shows or saves the caller's list view.
pub(super) async fn view(c: &mut Clients, cmd: ViewCommand) -> anyhow::Result<Rows> {
    match cmd {
        ViewCommand::Get => {
            let request = c.request(mpb::GetListViewRequest {});
            let v = c.mailboxes.get_list_view(request).await.answer()?;
            Ok(view_rows(&v))
        }
        ViewCommand::Set {
            columns,
            filter,
            sort,
            page_size,
        } => {
            let request = c.request(mpb::UpdateListViewRequest {
                view: Some(mpb::ListView {
                    columns,
                    filter,
                    order_by: sort,
                    page_size,
                }),
            });
            let v = c.mailboxes.update_list_view(request).await.answer()?;
            Ok(view_rows(&v))
        }
    }
}

fn view_rows(v: &mpb::ListView) -> Rows {
    Rows::one(
        vec!["columns", "filter", "sort", "page_size"],
        vec![
            json!(v.columns.join(",")),
            json!(v.filter),
            json!(v.order_by),
            json!(v.page_size),
        ],
    )
}
