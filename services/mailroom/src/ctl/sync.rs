//! `mailroom ctl sync`: a mailbox's sync status (tier, last and next sync, each folder's
//! checkpoint), a heartbeat as yourself, and a mailbox's messages from the index.

use clap::{Subcommand, ValueEnum};
use mailroom_platform::proto::sync::v1 as spb;
use serde_json::json;

use super::{Answer, Clients};
use crate::output::{time, Clock, Rows};

#[derive(Subcommand)]
pub enum SyncCommand {
    /// When a mailbox last synced and syncs next, why not, and each folder's checkpoint.
    Status { mailbox: String },
    /// Send a heartbeat as yourself (as an open tab would): your mailboxes sync more often.
    Activity {
        #[arg(long, value_enum, default_value_t = Client::WebTab)]
        client: Client,
    },
    /// A mailbox's messages, newest first (needs read access to the mailbox).
    Messages {
        mailbox: String,
        /// e.g. 'folder = "INBOX" AND unseen = true'
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Client {
    WebTab,
    DesktopApp,
    MobileApp,
}

fn tier_name(value: i32) -> &'static str {
    match spb::ActivityTier::try_from(value).unwrap_or(spb::ActivityTier::Unspecified) {
        spb::ActivityTier::Active => "active",
        spb::ActivityTier::Recent => "recent",
        spb::ActivityTier::Idle => "idle",
        spb::ActivityTier::Dormant => "dormant",
        spb::ActivityTier::Unspecified => "",
    }
}

pub(crate) async fn run(c: &mut Clients, cmd: SyncCommand) -> anyhow::Result<Rows> {
    match cmd {
        SyncCommand::Status { mailbox } => {
            let request = c.request(spb::GetSyncStatusRequest {
                mailbox_id: mailbox,
            });
            let st = c.sync.get_sync_status(request).await.answer()?;
            let mut rows = Rows::new(
                "folders",
                vec![
                    "folder",
                    "messages",
                    "unseen",
                    "uid_validity",
                    "last_uid",
                    "highest_modseq",
                ],
            );
            for f in &st.folders {
                rows.rows.push(vec![
                    json!(f.name),
                    json!(f.messages),
                    json!(f.unseen),
                    json!(f.uid_validity),
                    json!(f.last_uid),
                    json!(f.highest_modseq),
                ]);
            }
            rows.footer = vec![
                ("mailbox", json!(st.mailbox_id)),
                ("tier", json!(tier_name(st.tier))),
                (
                    "last_sync",
                    json!(time(st.last_sync_time.as_ref(), Clock::Seconds)),
                ),
                (
                    "next_sync",
                    json!(time(st.next_sync_time.as_ref(), Clock::Seconds)),
                ),
                ("last_error", json!(st.last_error)),
            ];
            Ok(rows)
        }
        SyncCommand::Activity { client } => {
            let client = match client {
                Client::WebTab => spb::ClientKind::WebTab,
                Client::DesktopApp => spb::ClientKind::DesktopApp,
                Client::MobileApp => spb::ClientKind::MobileApp,
            };
            let request = c.request(spb::RecordActivityRequest {
                client: client as i32,
            });
            let answer = c.sync.record_activity(request).await.answer()?;
            Ok(Rows::one(vec!["tier"], vec![json!(tier_name(answer.tier))]))
        }
        SyncCommand::Messages {
            mailbox,
            filter,
            page_size,
            page_token,
        } => {
            let request = c.request(spb::ListMessagesRequest {
                mailbox_id: mailbox,
                page_size,
                page_token,
                filter,
                order_by: String::new(),
            });
            let page = c.sync.list_messages(request).await.answer()?;
            let mut rows = Rows::new(
                "messages",
                vec!["date", "folder", "uid", "from", "subject", "flags", "size"],
            );
            for m in &page.messages {
                let from = m
                    .from
                    .first()
                    .map(|a| {
                        if a.name.is_empty() {
                            a.email.clone()
                        } else {
                            a.name.clone()
                        }
                    })
                    .unwrap_or_default();
                rows.rows.push(vec![
                    json!(time(m.internal_date.as_ref(), Clock::Seconds)),
                    json!(m.folder),
                    json!(m.uid),
                    json!(from),
                    json!(m.subject),
                    json!(m.flags.join(" ")),
                    json!(m.size),
                ]);
            }
            if !page.next_page_token.is_empty() {
                rows.footer = vec![("next_page_token", json!(page.next_page_token))];
            }
            Ok(rows)
        }
    }
}
