//! Reading mail, for the owner or someone granted `mailbox.read_mail`: ListMessages pages
//! through the index newest first (keyset page tokens, signed and bound to the query), and
//! GetMessageBody fetches one indexed message's raw bytes from the mail server now, bounded
//! in size (a literal larger than `max_body_bytes` is refused before it is read) and time,
//! and per person and per mail server ([`crate::body_reads`]).
//!
//! Folders are named as people read them (IMAP's modified UTF-7 decoded; INBOX in any case;
//! the server's own spelling is taken too) and opened under the server's spelling. A filter's
//! conditions all hold: two different folders, or `unseen` both true and false, match nothing.
//! A message, or its folder, that is no longer on the server is NOT_FOUND (retrying cannot
//! help), and the mailbox is pulled in for a sync that brings the index level.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mailroom_aip::{self as aip, Op, Value};
use mailroom_mail::imap;
use mailroom_platform::auth::Principal;
use mailroom_platform::proto::sync::v1 as pb;
use mailroom_platform::wire::timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{flags, uid_from_db};
use crate::envelope::StoredEnvelope;
use crate::error::{Result, SyncError, SyncFailure};
use crate::service::{mailbox_id, Sync};
use crate::store::messages::{self, After};
use crate::store::{folders, schedule};

/// What GetMessageBody found on the server.
enum Fetched {
    Body(Vec<u8>),
    /// The folder would not open, for good (gone, renamed, or not open to this account).
    FolderGone,
    /// The folder opened without the message.
    MessageGone,
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
    #[tracing::instrument(skip_all, fields(mailbox = %mailroom_aip::shown(&req.mailbox_id)))]
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
                mailroom_aip::shown(&req.order_by)
            )));
        }
        // Every condition must hold: two folders, or unseen and seen, match nothing.
        let mut folders_named: Vec<String> = Vec::new();
        let mut unseen: Option<bool> = None;
        let mut contradictory = false;
        for c in
            aip::parse_filter(&req.filter).map_err(|e| SyncError::InvalidArgument(e.to_string()))?
        {
            match (c.field.as_str(), c.op, &c.value) {
                ("folder", Op::Eq, Value::Text(name) | Value::Word(name)) => {
                    folders_named.push(name.clone())
                }
                ("unseen", Op::Eq, Value::Bool(b)) => match unseen {
                    Some(before) if before != *b => contradictory = true,
                    _ => unseen = Some(*b),
                },
                _ => {
                    return Err(SyncError::InvalidArgument(format!(
                    "filter on `{}` is not supported; use `folder = \"INBOX\"` and `unseen = true`",
                    mailroom_aip::shown(&c.field)
                )))
                }
            }
        }
        self.readable(principal, id).await?;
        let folder = if folders_named.is_empty() {
            None
        } else {
            let known = folders::folders(&self.pool, id).await?;
            let mut ids = folders_named
                .iter()
                .map(|name| folders::named(&known, name).map(|f| f.id));
            let first = ids.next().flatten();
            // An unknown folder, or two different ones: no message is in them.
            if first.is_none() || ids.any(|other| other != first) {
                contradictory = true;
            }
            first
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
        if contradictory {
            return Ok(pb::ListMessagesResponse::default());
        }
        let rows =
            messages::list_messages(&self.pool, id, folder, unseen, after, limit + 1).await?;
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
                    folder: imap::names::display_name(&m.folder),
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
    #[tracing::instrument(skip_all, fields(mailbox = %mailroom_aip::shown(&req.mailbox_id), uid = req.uid))]
    pub async fn message_body(
        &self,
        principal: &Principal,
        req: pb::GetMessageBodyRequest,
    ) -> Result<pb::MessageBody> {
        let id = mailbox_id(&req.mailbox_id)?;
        self.readable(principal, id).await?;
        let Principal::User { user_id, .. } = principal else {
            return Err(SyncError::PermissionDenied(
                "reading mail is for people, not services".into(),
            ));
        };
        let not_found = || {
            SyncError::MessageNotFound(format!(
                "message {} in folder `{}` of mailbox `{id}` is not in the index (list the messages again)",
                req.uid,
                mailroom_aip::shown(&req.folder)
            ))
        };
        let folder = folders::folder_named(&self.pool, id, &req.folder)
            .await?
            .ok_or_else(not_found)?;
        let size = messages::message_size(&self.pool, id, folder.id, req.uid)
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
            .login(id)
            .await?
            .ok_or_else(|| SyncError::NotFound(id.to_string()))?;
        let _read = self.body_reads.admit(*user_id, &login.login.host).await?;
        let options = self.engine.options().clone();
        // The body is one literal: up to max_body_bytes here, unlike the sync's envelopes.
        let limits = imap::ReadLimits {
            max_literal_bytes: self.max_body_bytes,
            ..self.engine.limits().read
        };
        let mut session = imap::connect_with(self.engine.connector(), &login.login, &limits)
            .await
            .map_err(|e| {
                let failure = SyncFailure::connecting(&login.login, &e);
                SyncError::Unavailable(format!("the mail server: {failure}"))
            })?;
        crate::engine::drain_unsolicited(&session);
        let fetched = tokio::time::timeout(options.io_timeout, async {
            // The folder refused for good (gone, renamed, or no longer open to this
            // account) is told apart from a failure that may pass.
            if let Err(e) = session.examine(&folder.name).await {
                return match imap::refusal(&e) {
                    Some(refused) if !refused.bad && !refused.is_temporary() => {
                        Ok(Fetched::FolderGone)
                    }
                    _ => Err(e),
                };
            }
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
            Ok::<_, async_imap::error::Error>(match raw {
                Some(raw) => Fetched::Body(raw),
                None => Fetched::MessageGone,
            })
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
        let raw = match fetched {
            Ok(Ok(Fetched::Body(raw))) => raw,
            Ok(Ok(gone)) => {
                // The index is behind the server: the next sync brings it level.
                if let Err(err) = schedule::pull_in(&self.pool, id).await {
                    tracing::warn!(%err, "the mailbox was not pulled in for a sync");
                }
                let what = match gone {
                    Fetched::FolderGone => format!(
                        "folder `{}` is no longer on the mail server (deleted or renamed there, or no longer open to this account)",
                        mailroom_aip::shown(&folder.display_name())
                    ),
                    _ => format!(
                        "message {} is no longer in folder `{}` on the mail server (deleted or moved there)",
                        req.uid,
                        mailroom_aip::shown(&folder.display_name())
                    ),
                };
                return Err(SyncError::MessageNotFound(format!(
                    "{what}; the index catches up at the next sync, which was asked for: list the messages again"
                )));
            }
            Ok(Err(e)) => {
                return Err(match imap::limit_of(&e) {
                    Some(imap::LimitExceeded::Literal { size, .. }) => {
                        SyncError::FailedPrecondition(format!(
                            "the server is sending the message as {size} bytes, more than the {} bytes GetMessageBody returns",
                            self.max_body_bytes
                        ))
                    }
                    _ => SyncError::Unavailable(format!(
                        "the mail server did not return the message: {}",
                        SyncFailure::from(e)
                    )),
                })
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
