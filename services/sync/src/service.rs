//! The sync's operations and who may call them: heartbeats (any signed-in person, for
//! themselves), a mailbox's sync status (whoever may view the mailbox), and reading mail
//! (only with `mailbox.read_mail`: the owner or someone granted; an admin or a supervisor
//! who may merely view gets PERMISSION_DENIED).
//!
//! Another organisation's mailbox, an unknown one and one the caller may not view all get
//! the same NOT_FOUND.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mailroom_aip::token::PageTokenKey;
use mailroom_aip::{self as aip, Op, Value};
use mailroom_mail::imap;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::sync::v1 as pb;
use mailroom_types::{MailboxId, Permission, UserId};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::activity::Activity;
use crate::domain::{flags, uid_from_db, ClientKind, Tier};
use crate::engine::Engine;
use crate::envelope::StoredEnvelope;
use crate::error::{Result, SyncError, SyncFailure};
use crate::metrics;
use crate::peers::Peers;
use crate::store::{self, After, ScheduleRow};

pub struct Sync {
    pub pool: PgPool,
    pub activity: Activity,
    pub peers: Peers,
    pub engine: Engine,
    pub tokens: PageTokenKey,
    pub max_body_bytes: u64,
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn mailbox_id(value: &str) -> Result<Uuid> {
    Uuid::parse_str(value.trim()).map_err(|_| {
        SyncError::InvalidArgument(format!("mailbox_id `{value}` is not a mailbox id (a UUID)"))
    })
}

/// Where a page of ListMessages continues.
#[derive(Serialize, Deserialize)]
struct Position {
    /// internal_date, microseconds since the epoch.
    d: i64,
    f: i32,
    u: i32,
}

impl Sync {
    /// A heartbeat: the caller is here now. An owner who was less than active has their
    /// mailboxes' next sync pulled in at once.
    #[tracing::instrument(skip_all)]
    pub async fn record_activity(
        &self,
        principal: &Principal,
        req: pb::RecordActivityRequest,
    ) -> Result<pb::RecordActivityResponse> {
        let Principal::User { user_id, .. } = principal else {
            return Err(SyncError::PermissionDenied(
                "heartbeats come from a signed-in person, not a service".into(),
            ));
        };
        let client = ClientKind::parse(req.client).map_err(SyncError::InvalidArgument)?;
        ::metrics::counter!(metrics::HEARTBEATS, "client" => client.name()).increment(1);
        let now = Utc::now();
        let beat = self.activity.record(user_id.into_uuid(), now).await?;
        if beat.before != beat.now {
            let moved =
                store::pull_in_owner(&self.pool, user_id.into_uuid(), now, beat.now.code()).await?;
            tracing::debug!(from = beat.before.name(), moved, "owner became active");
        }
        Ok(pb::RecordActivityResponse {
            tier: beat.now.to_proto() as i32,
        })
    }

    /// The schedule row, if the caller may see this mailbox at all.
    async fn visible(&self, principal: &Principal, id: Uuid) -> Result<ScheduleRow> {
        let row = store::schedule_row(&self.pool, id).await?;
        match (principal, row) {
            (Principal::Service { .. }, Some(row)) => Ok(row),
            (
                Principal::User {
                    user_id, org_id, ..
                },
                Some(row),
            ) if row.org_id == org_id.into_uuid() => {
                if self
                    .peers
                    .allowed(
                        *user_id,
                        Permission::MailboxView,
                        MailboxId::from_uuid(id),
                        UserId::from_uuid(row.owner_user_id),
                    )
                    .await?
                {
                    Ok(row)
                } else {
                    Err(SyncError::NotFound(id.to_string()))
                }
            }
            _ => Err(SyncError::NotFound(id.to_string())),
        }
    }

    /// As [`Sync::visible`], and the caller may read the mailbox's mail.
    async fn readable(&self, principal: &Principal, id: Uuid) -> Result<ScheduleRow> {
        let row = self.visible(principal, id).await?;
        let allowed = match principal {
            Principal::User { user_id, .. } => {
                self.peers
                    .allowed(
                        *user_id,
                        Permission::MailboxReadMail,
                        MailboxId::from_uuid(id),
                        UserId::from_uuid(row.owner_user_id),
                    )
                    .await?
            }
            Principal::Service { .. } => false,
        };
        if !allowed {
            return Err(SyncError::PermissionDenied(format!(
                "reading mailbox `{id}`'s mail needs mailbox.read_mail: its owner has it, anyone else needs a grant (access control's WriteRelationships mailbox#reader, made by an admin)"
            )));
        }
        Ok(row)
    }

    #[tracing::instrument(skip_all, fields(mailbox = %req.mailbox_id))]
    pub async fn status(
        &self,
        principal: &Principal,
        req: pb::GetSyncStatusRequest,
    ) -> Result<pb::SyncStatus> {
        let id = mailbox_id(&req.mailbox_id)?;
        let row = self.visible(principal, id).await?;
        let tier = match self.activity.tier(row.owner_user_id).await {
            Ok(t) => t,
            Err(_) => Tier::from_code(row.tier),
        };
        let folders = store::folders(&self.pool, id)
            .await?
            .into_iter()
            .map(|f| pb::FolderStatus {
                name: f.name,
                uid_validity: u32::try_from(f.uid_validity).unwrap_or(0),
                last_uid: u32::try_from(f.last_uid).unwrap_or(0),
                highest_modseq: u64::try_from(f.highest_modseq).unwrap_or(0),
                messages: f.messages,
                unseen: f.unseen,
            })
            .collect();
        let last_error = if row.parked {
            format!(
                "parked (no retries until the password or server is updated): {}",
                row.last_error
            )
        } else {
            row.last_error
        };
        Ok(pb::SyncStatus {
            mailbox_id: id.to_string(),
            tier: tier.to_proto() as i32,
            last_sync_time: row.last_sync.map(timestamp),
            next_sync_time: (!row.parked).then(|| timestamp(row.next_due)),
            last_error,
            folders,
        })
    }

    #[tracing::instrument(skip_all, fields(mailbox = %req.mailbox_id))]
    pub async fn list_messages(
        &self,
        principal: &Principal,
        req: pb::ListMessagesRequest,
    ) -> Result<pb::ListMessagesResponse> {
        let id = mailbox_id(&req.mailbox_id)?;
        let limit = aip::page_size(req.page_size, 50, 500)
            .map_err(|e| SyncError::InvalidArgument(e.to_string()))?;
        let order = req.order_by.trim().to_ascii_lowercase();
        if !(order.is_empty() || order == "internal_date desc") {
            return Err(SyncError::InvalidArgument(format!(
                "order_by `{}` is not supported; messages are listed newest first (`internal_date desc`)",
                req.order_by
            )));
        }
        let mut folder_name = None;
        let mut unseen_only = false;
        for c in
            aip::parse_filter(&req.filter).map_err(|e| SyncError::InvalidArgument(e.to_string()))?
        {
            match (c.field.as_str(), c.op, &c.value) {
                ("folder", Op::Eq, Value::Text(name) | Value::Word(name)) => {
                    folder_name = Some(name.clone())
                }
                ("unseen", Op::Eq, Value::Bool(b)) => unseen_only = *b,
                _ => {
                    return Err(SyncError::InvalidArgument(format!(
                    "filter on `{}` is not supported; use `folder = \"INBOX\"` and `unseen = true`",
                    c.field
                )))
                }
            }
        }
        self.readable(principal, id).await?;
        let folder = match &folder_name {
            Some(name) => match store::folder_by_name(&self.pool, id, name).await? {
                Some(f) => Some(f.id),
                None => {
                    return Ok(pb::ListMessagesResponse::default());
                }
            },
            None => None,
        };
        let query = format!("{id}|{}|{}", req.filter, order);
        let after = self
            .tokens
            .decode::<Position>(&query, &req.page_token)
            .map_err(|e| SyncError::InvalidArgument(e.to_string()))?
            .and_then(|p| {
                DateTime::<Utc>::from_timestamp_micros(p.d).map(|d| After {
                    internal_date: d,
                    folder_id: p.f,
                    uid: p.u,
                })
            });
        let rows =
            store::list_messages(&self.pool, id, folder, unseen_only, after, limit + 1).await?;
        let more = rows.len() as i64 > limit;
        let rows = &rows[..rows.len().min(limit as usize)];
        let next_page_token = match (more, rows.last()) {
            (true, Some((folder_id, last))) => self.tokens.encode(
                &query,
                &Position {
                    d: last.internal_date.timestamp_micros(),
                    f: *folder_id,
                    u: last.uid,
                },
            ),
            _ => String::new(),
        };
        let messages = rows
            .iter()
            .map(|(_, m)| {
                let env = StoredEnvelope::decode_stored(&m.envelope);
                let keywords: Vec<String> = m
                    .keywords
                    .as_deref()
                    .map(|k| k.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default();
                pb::MessageSummary {
                    folder: m.folder.clone(),
                    uid: uid_from_db(m.uid),
                    flags: flags::names(m.flags, &keywords),
                    size: i64::from(m.size),
                    subject: env.subject,
                    from: env
                        .from
                        .into_iter()
                        .map(|a| pb::Address {
                            name: a.name,
                            email: a.email,
                        })
                        .collect(),
                    to: env
                        .to
                        .into_iter()
                        .map(|a| pb::Address {
                            name: a.name,
                            email: a.email,
                        })
                        .collect(),
                    internal_date: Some(timestamp(m.internal_date)),
                    message_id: env.message_id,
                }
            })
            .collect();
        Ok(pb::ListMessagesResponse {
            messages,
            next_page_token,
        })
    }

    /// A message's raw bytes, fetched from the server now.
    #[tracing::instrument(skip_all, fields(mailbox = %req.mailbox_id, uid = req.uid))]
    pub async fn message_body(
        &self,
        principal: &Principal,
        req: pb::GetMessageBodyRequest,
    ) -> Result<pb::MessageBody> {
        let id = mailbox_id(&req.mailbox_id)?;
        self.readable(principal, id).await?;
        let not_found = || {
            SyncError::MessageNotFound(format!(
                "message {} in folder `{}` of mailbox `{id}` is not in the index (list the messages again)",
                req.uid, req.folder
            ))
        };
        let size = store::message_size(&self.pool, id, &req.folder, req.uid)
            .await?
            .ok_or_else(not_found)?;
        if u64::try_from(size).unwrap_or(0) > self.max_body_bytes {
            return Err(SyncError::FailedPrecondition(format!(
                "the message is {size} bytes, more than the {} bytes GetMessageBody returns",
                self.max_body_bytes
            )));
        }
        let login = self
            .peers
            .login(MailboxId::from_uuid(id))
            .await?
            .ok_or_else(|| SyncError::NotFound(id.to_string()))?;
        let options = self.engine.options().clone();
        let mut session = imap::connect(self.engine.connector(), &login.login)
            .await
            .map_err(|e| {
                let failure = SyncFailure::connecting(&login.login, &e);
                SyncError::Unavailable(format!("the mail server: {failure}"))
            })?;
        let fetched = tokio::time::timeout(options.io_timeout, async {
            session.examine(&req.folder).await?;
            let mut raw = None;
            {
                let mut stream = session
                    .uid_fetch(req.uid.to_string(), "(UID BODY.PEEK[])")
                    .await?;
                while let Some(fetch) = stream.next().await {
                    let fetch = fetch?;
                    if fetch.uid == Some(req.uid) {
                        raw = fetch.body().map(<[u8]>::to_vec);
                    }
                }
            }
            Ok::<_, async_imap::error::Error>(raw)
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
        let raw = match fetched {
            Ok(Ok(Some(raw))) => raw,
            Ok(Ok(None)) => return Err(not_found()),
            Ok(Err(e)) => {
                return Err(SyncError::Unavailable(format!(
                    "the mail server did not return the message: {}",
                    mailroom_mail::one_line(&e.to_string())
                )))
            }
            Err(_) => {
                return Err(SyncError::Unavailable(
                    "the mail server did not return the message in time".into(),
                ))
            }
        };
        let max = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        if raw.len() > max {
            return Err(SyncError::FailedPrecondition(format!(
                "the message is {} bytes, more than the {max} bytes GetMessageBody returns",
                raw.len()
            )));
        }
        Ok(pb::MessageBody { raw })
    }
}
