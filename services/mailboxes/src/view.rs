//! What a caller sees of a mailbox: the columns they chose (the read mask, or their saved list
//! view), filled from a row, and the list views themselves.

use std::collections::HashMap;

use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_platform::wire::timestamp;
use mailroom_types::{MailboxId, UserId};

use crate::error::{MailboxError, Result};
use crate::list::DEFAULT_PAGE;
use crate::store::{ListViewRow, MailboxRow};

/// The list view's columns, in the order the screen offers them.
pub const COLUMN_NAMES: &[&str] = &[
    "employee",
    "email",
    "name",
    "sender_name",
    "last_sync_time",
    "sync_state",
    "unread_count",
    "message_count",
    "disk_mb",
    "in_crm",
    "crm_queue",
    "access_by",
];

/// The columns a new user's list shows.
pub fn default_columns() -> Vec<String> {
    [
        "employee",
        "email",
        "name",
        "last_sync_time",
        "sync_state",
        "unread_count",
        "disk_mb",
        "in_crm",
        "access_by",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Which parts of a mailbox to fill. `id` and `org_id` always are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub owner: bool,
    pub email: bool,
    pub name: bool,
    pub sender_name: bool,
    pub servers: bool,
    pub crm: bool,
    pub sync: bool,
    pub counters: bool,
    pub access_by: bool,
    pub times: bool,
}

impl Columns {
    pub fn all() -> Columns {
        Columns {
            owner: true,
            email: true,
            name: true,
            sender_name: true,
            servers: true,
            crm: true,
            sync: true,
            counters: true,
            access_by: true,
            times: true,
        }
    }

    /// From read-mask paths or list-view column names (either naming works).
    pub fn parse(paths: &[String]) -> Result<Columns> {
        let mut c = Columns::default();
        for path in paths {
            match path.trim() {
                "id" | "org_id" => {}
                "employee" | "owner" | "owner_user_id" | "owner_display_name"
                | "owner_last_name" | "owner_dismissed" => c.owner = true,
                "email" => c.email = true,
                "name" => c.name = true,
                "sender_name" => c.sender_name = true,
                "imap" | "smtp" => c.servers = true,
                "in_crm" | "crm_queue" | "crm" => c.crm = true,
                "last_sync_time" | "sync_state" | "sync_error" => c.sync = true,
                "unread_count" | "message_count" | "disk_mb" => c.counters = true,
                "access_by" | "access_by_user_ids" => c.access_by = true,
                "create_time" | "update_time" => c.times = true,
                other => {
                    return Err(MailboxError::InvalidArgument(format!(
                        "unknown column `{}`; columns: {}, or any Mailbox field",
                        mailroom_aip::shown(other),
                        COLUMN_NAMES.join(", ")
                    )))
                }
            }
        }
        Ok(c)
    }
}

/// The mailbox as the caller sees it: only the chosen columns, never a credential.
pub fn to_proto(
    row: &MailboxRow,
    columns: &Columns,
    readers: Option<&HashMap<MailboxId, Vec<UserId>>>,
) -> pb::Mailbox {
    let mut m = pb::Mailbox {
        // A mailbox only validated, never saved, has no id.
        id: if row.id.as_uuid().is_nil() {
            String::new()
        } else {
            row.id.to_string()
        },
        org_id: row.org_id.to_string(),
        ..Default::default()
    };
    if columns.owner {
        m.owner_user_id = row.owner_user_id.to_string();
        m.owner_display_name = format!("{} {}", row.owner_first_name, row.owner_last_name)
            .trim()
            .to_owned();
        m.owner_last_name = row.owner_last_name.clone();
        m.owner_dismissed = row.owner_dismissed;
    }
    if columns.email {
        m.email = row.email.clone();
    }
    if columns.name {
        m.name = row.name.clone();
    }
    if columns.sender_name {
        m.sender_name = row.sender_name.clone();
    }
    if columns.servers {
        m.imap = Some(row.imap().to_proto());
        m.smtp = Some(row.smtp().to_proto());
    }
    if columns.crm {
        m.crm = Some(pb::CrmSettings {
            in_crm: row.in_crm,
            queue_user_ids: row.crm_queue.iter().map(UserId::to_string).collect(),
        });
    }
    if columns.sync {
        m.sync_state = row.state().to_proto() as i32;
        m.sync_error = row.sync_error.clone();
        m.last_sync_time = row.last_sync_time.map(timestamp);
    }
    if columns.counters {
        m.unread_count = row.unread_count;
        m.message_count = row.message_count;
        m.disk_mb = row.disk_bytes as f64 / (1024.0 * 1024.0);
    }
    if columns.access_by {
        if let Some(readers) = readers {
            // Access control's readers, and the owner as this registry knows them: ownership
            // reaches access control through events, a moment after a connect or transfer.
            let mut ids: Vec<UserId> = readers.get(&row.id).cloned().unwrap_or_default();
            if !row.owner_dismissed && !ids.contains(&row.owner_user_id) {
                ids.push(row.owner_user_id);
            }
            if row.owner_dismissed {
                ids.retain(|id| *id != row.owner_user_id);
            }
            ids.sort();
            m.access_by_user_ids = ids.iter().map(UserId::to_string).collect();
        }
    }
    if columns.times {
        m.create_time = Some(timestamp(row.create_time));
        m.update_time = Some(timestamp(row.update_time));
    }
    m
}

/// A saved list view, or the default one for a person who saved none.
pub fn view_to_proto(saved: Option<ListViewRow>) -> pb::ListView {
    match saved {
        Some(v) => pb::ListView {
            columns: v.columns,
            filter: v.filter,
            order_by: v.order_by,
            page_size: v.page_size,
        },
        None => pb::ListView {
            columns: default_columns(),
            filter: String::new(),
            order_by: String::new(),
            page_size: DEFAULT_PAGE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_parse_from_either_naming_and_refuse_unknown_ones() {
        let c = Columns::parse(&["employee".into(), "disk_mb".into()]).unwrap();
        assert!(c.owner && c.counters && !c.email && !c.access_by);
        assert_eq!(
            Columns::parse(&["owner_display_name".into()]).unwrap(),
            Columns::parse(&["employee".into()]).unwrap()
        );
        let err = Columns::parse(&["password".into()]).unwrap_err();
        assert!(
            err.to_string().contains("unknown column `password`"),
            "{err}"
        );
        for name in COLUMN_NAMES {
            assert!(Columns::parse(&[(*name).to_owned()]).is_ok(), "{name}");
        }
    }
}
