//! The registry's operations behind the gRPC API, and who may call each.
//!
//! Who may: access control decides, through the caller's scope on a permission (see
//! [`crate::scope`]). A mailbox outside the caller's `mailbox.view` scope is answered as
//! NOT_FOUND, like one that does not exist; one they may view but not change is
//! PERMISSION_DENIED with the reason. An owner connects their own mailboxes; connecting one
//! for someone else takes `mailbox.modify` over that person's mailboxes. Services (their own
//! token) act on any organisation they name.
//!
//! Every change is written with its event in one transaction (the outbox), so access
//! control, identity and the sync service hear of exactly the changes that happened, even
//! when they or the broker are down at the time.

use std::collections::HashSet;
use std::time::Duration;

use mailroom_aip::{self as aip, token::PageTokenKey};
use mailroom_clients::AccessClient;
use mailroom_platform::auth::Principal;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_platform::redis::{RateDecision, RateLimiter};
use mailroom_platform::sealed::SealingKeys;
use mailroom_types::Permission;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{self, Crm, Protocol, ServerSettings, SyncState};
use crate::error::{MailboxError, Result};
use crate::events;
use crate::list::{self, Cursor};
use crate::probe::{Failure, Prober, Step};
use crate::scope::{RegistryAccess as _, Scope};
use crate::store::{self, Changes, ListViewRow, MailboxRow, NewMailbox, Owner};
use crate::view::{self, Columns};

/// How long a connect waits for identity's event about a user it has not heard of yet.
const OWNER_WAIT: Duration = Duration::from_secs(5);
/// The most mailboxes one ConnectMailboxes call takes.
pub const MAX_BULK: usize = 100;
/// The default and largest list page.
pub const DEFAULT_PAGE: i32 = 50;
pub const MAX_PAGE: i32 = 500;
/// Up to this many matches `total_size` is counted exactly; above, PostgreSQL estimates it.
pub const EXACT_COUNT_UP_TO: i64 = 1_000;

/// Everything the operations need.
pub struct Mailboxes {
    pub(crate) pool: PgPool,
    pub(crate) access: AccessClient,
    pub(crate) prober: Prober,
    pub(crate) keys: SealingKeys,
    pub(crate) tokens: PageTokenKey,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) login_concurrency: usize,
}

/// The caller, as the registry needs them.
#[derive(Debug, Clone)]
struct Caller {
    org: Uuid,
    user: Option<Uuid>,
    actor: EventActor,
    key: String,
}

fn caller(principal: &Principal, org_for_service: &str) -> Result<Caller> {
    match principal {
        Principal::User {
            user_id, org_id, ..
        } => Ok(Caller {
            org: org_id.into_uuid(),
            user: Some(user_id.into_uuid()),
            actor: EventActor::User(user_id.into_uuid()),
            key: user_id.to_string(),
        }),
        Principal::Service { name } => {
            let org = Uuid::parse_str(org_for_service.trim()).map_err(|_| {
                MailboxError::InvalidArgument(
                    "a service caller names the organisation: set org_id (a mailbox's own organisation is used where the request names a mailbox)".into(),
                )
            })?;
            Ok(Caller {
                org,
                user: None,
                actor: EventActor::Service(name.clone()),
                key: format!("service:{name}"),
            })
        }
    }
}

fn mailbox_id(input: &str) -> Result<Uuid> {
    Uuid::parse_str(input.trim()).map_err(|_| MailboxError::NotFound(input.to_owned()))
}

fn seal_context(id: Uuid) -> Vec<u8> {
    format!("mailbox:{id}:password").into_bytes()
}

/// What a failed connect item reports in a bulk answer.
fn connect_failure(err: &MailboxError) -> (pb::ConnectStep, pb::ConnectFailure) {
    match err {
        MailboxError::Login(failures) => {
            let first = failures.first();
            let step = match first.map(|f| f.step) {
                Some(Step::Smtp) => pb::ConnectStep::Smtp,
                _ => pb::ConnectStep::Imap,
            };
            let failure = match first.map(|f| &f.failure) {
                Some(Failure::WrongPassword(_)) => pb::ConnectFailure::WrongPassword,
                Some(Failure::Unreachable(_)) | Some(Failure::Refused(_)) => {
                    pb::ConnectFailure::Unreachable
                }
                Some(Failure::Tls(_)) => pb::ConnectFailure::Tls,
                Some(Failure::Timeout(_)) => pb::ConnectFailure::Timeout,
                _ => pb::ConnectFailure::Protocol,
            };
            (step, failure)
        }
        MailboxError::AlreadyConnected(_) => (
            pb::ConnectStep::Request,
            pb::ConnectFailure::AlreadyConnected,
        ),
        MailboxError::PermissionDenied(_) => (
            pb::ConnectStep::Request,
            pb::ConnectFailure::PermissionDenied,
        ),
        MailboxError::RateLimited { .. } => {
            (pb::ConnectStep::Request, pb::ConnectFailure::RateLimited)
        }
        _ => (pb::ConnectStep::Request, pb::ConnectFailure::InvalidRequest),
    }
}

/// One item of a bulk answer.
fn connect_result(email: String, outcome: Result<MailboxRow>) -> pb::ConnectResult {
    match outcome {
        Ok(row) => pb::ConnectResult {
            email: row.email.clone(),
            mailbox: Some(view::to_proto(&row, &Columns::all(), None)),
            ..Default::default()
        },
        Err(err) => {
            let (step, failure) = connect_failure(&err);
            // Internal errors are logged in full and reported plainly.
            let message = match mailroom_platform::error::ApiError::kind(&err) {
                mailroom_platform::error::ErrorKind::Internal => {
                    tracing::error!(error = %mailroom_platform::error::DisplayChain(&err), "connect failed");
                    "internal error; the server log has the details".to_owned()
                }
                _ => err.to_string(),
            };
            pb::ConnectResult {
                email,
                mailbox: None,
                error: message,
                failed_step: step as i32,
                failure: failure as i32,
            }
        }
    }
}

/// One mailbox to connect, parsed.
struct Connect {
    email: String,
    owner: Option<Uuid>,
    name: String,
    sender_name: String,
    imap: ServerSettings,
    smtp: ServerSettings,
    crm: Crm,
    password: SecretString,
}

impl Mailboxes {
    /// The caller's scope on `permission` (services: the whole organisation).
    async fn scope(&self, caller: &Caller, permission: Permission, only: &[Uuid]) -> Result<Scope> {
        match caller.user {
            None => Ok(Scope::WholeOrganization),
            Some(user) => self.access.scope(user, permission, only).await,
        }
    }

    /// A mailbox the caller may use with `permission`: NOT_FOUND when they may not even view
    /// it, PERMISSION_DENIED when they may view but not this.
    async fn authorized(
        &self,
        caller: &Caller,
        id: Uuid,
        permission: Permission,
    ) -> Result<MailboxRow> {
        let row = match caller.user {
            Some(_) => store::get(&self.pool, caller.org, id, false).await?,
            None => self.any_org(id).await?,
        }
        .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
        if caller.user.is_none() {
            return Ok(row);
        }
        let scope = self.scope(caller, permission, &[row.owner_user_id]).await?;
        if scope.covers(row.id, row.owner_user_id) {
            return Ok(row);
        }
        if permission != Permission::MailboxView {
            let view = self
                .scope(caller, Permission::MailboxView, &[row.owner_user_id])
                .await?;
            if view.covers(row.id, row.owner_user_id) {
                return Err(MailboxError::PermissionDenied(match permission {
                    Permission::MailboxSync => "you may see this mailbox but not sync it: syncing takes its ownership, admin rights or \"change mailboxes\"".into(),
                    _ => "you may see this mailbox but not change it: supervisors see their subordinates' mailboxes and change nothing; changing takes its ownership, admin rights or \"change mailboxes\" (access control's settings)".into(),
                }));
            }
        }
        Err(MailboxError::NotFound(id.to_string()))
    }

    async fn any_org(&self, id: Uuid) -> Result<Option<MailboxRow>> {
        let sql = format!("SELECT {} FROM mailboxes WHERE id = $1", store::COLUMNS);
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A user of the organisation, waiting briefly for identity's event about one just made.
    async fn owner(&self, org: Uuid, user: Uuid) -> Result<Owner> {
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        loop {
            if let Some(owner) = store::owner(&self.pool, org, user).await? {
                return Ok(owner);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MailboxError::UserNotFound(format!(
                    "user `{user}` was not found in the organisation (a user created a moment ago is known here once identity's event arrives; retry shortly)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Counts one login check for the caller.
    async fn rate_limit(&self, caller: &Caller) -> Result<()> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.hit(&caller.key).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => Err(MailboxError::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            }),
            Err(err) => {
                // Redis down: checks go on (each is bounded by its deadline), loudly.
                tracing::warn!(%err, "rate limiter unavailable; login check not counted");
                Ok(())
            }
        }
    }

    fn parse_connect(
        mailbox: &pb::Mailbox,
        password: &str,
        imap: Option<&pb::ServerSettings>,
        smtp: Option<&pb::ServerSettings>,
    ) -> Result<Connect> {
        let email = domain::address("mailbox.email", &mailbox.email)?;
        let owner = if mailbox.owner_user_id.trim().is_empty() {
            None
        } else {
            Some(domain::user_id(
                "mailbox.owner_user_id",
                &mailbox.owner_user_id,
            )?)
        };
        Ok(Connect {
            name: domain::name("mailbox.name", &mailbox.name)?,
            sender_name: domain::name("mailbox.sender_name", &mailbox.sender_name)?,
            imap: ServerSettings::parse("mailbox.imap", Protocol::Imap, imap, &email)?,
            smtp: ServerSettings::parse("mailbox.smtp", Protocol::Smtp, smtp, &email)?,
            crm: Crm::parse(mailbox.crm.as_ref())?,
            password: domain::password("password", password)?,
            owner,
            email,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn connect(
        &self,
        principal: &Principal,
        req: pb::ConnectMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let mailbox = req.mailbox.unwrap_or_default();
        let caller = caller(principal, &mailbox.org_id)?;
        let parsed = Self::parse_connect(
            &mailbox,
            &req.password,
            mailbox.imap.as_ref(),
            mailbox.smtp.as_ref(),
        )?;
        let row = self.connect_one(&caller, parsed, req.validate_only).await?;
        Ok(view::to_proto(&row, &Columns::all(), None))
    }

    async fn connect_one(
        &self,
        caller: &Caller,
        c: Connect,
        validate_only: bool,
    ) -> Result<MailboxRow> {
        let owner_id = c.owner.or(caller.user).ok_or_else(|| {
            MailboxError::InvalidArgument(
                "a service caller names the owner: set mailbox.owner_user_id".into(),
            )
        })?;
        if caller.user != Some(owner_id) {
            let scope = self
                .scope(caller, Permission::MailboxModify, &[owner_id])
                .await?;
            if !matches!(&scope, Scope::WholeOrganization)
                && !matches!(&scope, Scope::Some { owners, .. } if owners.contains(&owner_id))
            {
                return Err(MailboxError::PermissionDenied(
                    "connecting a mailbox for someone else takes admin rights or \"change mailboxes\" over their mailboxes; an employee connects their own".into(),
                ));
            }
        }
        let owner = self.owner(caller.org, owner_id).await?;
        if !owner.active {
            return Err(MailboxError::FailedPrecondition(format!(
                "user `{owner_id}` is {}; a mailbox is connected for an active user",
                if owner.dismissed {
                    "dismissed"
                } else {
                    "not active yet (invited)"
                }
            )));
        }
        let taken: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM mailboxes WHERE org_id = $1 AND email_key = lower($2)",
        )
        .bind(caller.org)
        .bind(&c.email)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Err(MailboxError::AlreadyConnected(format!(
                "{} is already connected in this organisation; edit that mailbox instead (UpdateMailbox)",
                c.email
            )));
        }
        self.rate_limit(caller).await?;
        self.prober
            .check_both(&c.imap, &c.smtp, &c.password)
            .await
            .map_err(MailboxError::Login)?;
        let id = Uuid::now_v7();
        let sealed = self
            .keys
            .seal(c.password.expose_secret(), &seal_context(id))?;
        let key_id = self.keys.newest_id().unwrap_or_default().to_owned();
        let mut tx = self.pool.begin().await?;
        let row = store::insert(
            &mut tx,
            &NewMailbox {
                id,
                org_id: caller.org,
                owner: &owner,
                email: &c.email,
                name: &c.name,
                sender_name: &c.sender_name,
                imap: &c.imap,
                smtp: &c.smtp,
                crm: &c.crm,
                sealed_password: &sealed,
                key_id: &key_id,
            },
        )
        .await
        .map_err(|err| {
            if store::is_duplicate_address(&err) {
                MailboxError::AlreadyConnected(format!(
                    "{} was connected by someone else a moment ago",
                    c.email
                ))
            } else {
                err.into()
            }
        })?;
        if validate_only {
            tx.rollback().await?;
            return Ok(MailboxRow {
                id: Uuid::nil(),
                ..row
            });
        }
        events::publish(
            &mut tx,
            &row,
            &caller.actor,
            ev::envelope::Payload::MailboxConnected(ev::MailboxConnected {
                mailbox: Some(events::snapshot(&row)),
            }),
        )
        .await?;
        events::request_sync(
            &mut tx,
            &row,
            &caller.actor,
            ev::SyncPriority::High,
            "connected",
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("mailroom_mailboxes_connected_total").increment(1);
        tracing::info!(mailbox = %row.id, owner = %row.owner_user_id, "mailbox connected");
        Ok(row)
    }

    #[tracing::instrument(skip_all, fields(mailboxes = req.mailboxes.len()))]
    pub async fn connect_many(
        self: &std::sync::Arc<Self>,
        principal: &Principal,
        req: pb::ConnectMailboxesRequest,
    ) -> Result<pb::ConnectMailboxesResponse> {
        let caller = caller(principal, &Uuid::nil().to_string())?;
        if caller.user.is_none() {
            return Err(MailboxError::InvalidArgument(
                "ConnectMailboxes is for people; a service connects one mailbox at a time with ConnectMailbox and an org_id".into(),
            ));
        }
        if req.mailboxes.is_empty() || req.mailboxes.len() > MAX_BULK {
            return Err(MailboxError::InvalidArgument(format!(
                "name 1 to {MAX_BULK} mailboxes, not {}",
                req.mailboxes.len()
            )));
        }
        // One domain for all, as the shared settings imply.
        let mut domain: Option<String> = None;
        let mut seen: HashSet<String> = HashSet::new();
        let mut items: Vec<(usize, String, Result<Connect>)> = Vec::new();
        for (i, m) in req.mailboxes.iter().enumerate() {
            let mailbox = pb::Mailbox {
                email: m.email.clone(),
                owner_user_id: m.owner_user_id.clone(),
                name: m.name.clone(),
                sender_name: m.sender_name.clone(),
                ..Default::default()
            };
            let parsed = Self::parse_connect(&mailbox, &m.password, req.imap.as_ref(), req.smtp.as_ref())
                .and_then(|c| {
                    let d = mailroom_platform::email::domain_of(&c.email).to_owned();
                    match &domain {
                        None => domain = Some(d),
                        Some(first) if *first != d => {
                            return Err(MailboxError::InvalidArgument(format!(
                                "{} is not of {first}: mailboxes connected together share one domain and one set of server settings",
                                c.email
                            )))
                        }
                        Some(_) => {}
                    }
                    if !seen.insert(c.email.clone()) {
                        return Err(MailboxError::InvalidArgument(format!(
                            "{} appears twice in this request",
                            c.email
                        )));
                    }
                    Ok(c)
                });
            items.push((i, m.email.clone(), parsed));
        }
        // Each item is a task of its own (bounded by a semaphore), so the checks run side by
        // side on every core and one slow server holds up only its own item.
        let permits =
            std::sync::Arc::new(tokio::sync::Semaphore::new(self.login_concurrency.max(1)));
        let validate_only = req.validate_only;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, email, parsed) in items {
            let this = self.clone();
            let caller = caller.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let outcome = match parsed {
                    Ok(c) => this.connect_one(&caller, c, validate_only).await,
                    Err(e) => Err(e),
                };
                (i, connect_result(email, outcome))
            });
        }
        let mut results: Vec<(usize, pb::ConnectResult)> = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(result) => results.push(result),
                Err(err) => {
                    return Err(MailboxError::Internal(format!(
                        "a connect check stopped unexpectedly: {err}"
                    )))
                }
            }
        }
        results.sort_by_key(|(i, _)| *i);
        Ok(pb::ConnectMailboxesResponse {
            results: results.into_iter().map(|(_, r)| r).collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn get(
        &self,
        principal: &Principal,
        req: pb::GetMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let caller = caller(principal, &Uuid::nil().to_string())?;
        let id = mailbox_id(&req.id)?;
        let row = self
            .authorized(&caller, id, Permission::MailboxView)
            .await?;
        let readers = self
            .access
            .mail_readers(&[(row.id, row.owner_user_id)])
            .await?;
        Ok(view::to_proto(&row, &Columns::all(), Some(&readers)))
    }

    #[tracing::instrument(skip_all, fields(paths = ?req.update_mask.as_ref().map(|m| &m.paths)))]
    pub async fn update(
        &self,
        principal: &Principal,
        req: pb::UpdateMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let caller = caller(principal, &Uuid::nil().to_string())?;
        let mailbox = req.mailbox.unwrap_or_default();
        let id = mailbox_id(&mailbox.id)?;
        let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(MailboxError::InvalidArgument(
                "name what to change in update_mask: name, sender_name, imap, smtp, password, crm"
                    .into(),
            ));
        }
        let row = self
            .authorized(&caller, id, Permission::MailboxModify)
            .await?;
        let mut changes = Changes::default();
        let mut changed: Vec<String> = Vec::new();
        let mut new_password: Option<SecretString> = None;
        for path in &paths {
            match path.as_str() {
                "name" => changes.name = Some(domain::name("mailbox.name", &mailbox.name)?),
                "sender_name" => {
                    changes.sender_name =
                        Some(domain::name("mailbox.sender_name", &mailbox.sender_name)?)
                }
                "imap" => {
                    changes.imap = Some(ServerSettings::parse(
                        "mailbox.imap",
                        Protocol::Imap,
                        mailbox.imap.as_ref(),
                        &row.email,
                    )?)
                }
                "smtp" => {
                    changes.smtp = Some(ServerSettings::parse(
                        "mailbox.smtp",
                        Protocol::Smtp,
                        mailbox.smtp.as_ref(),
                        &row.email,
                    )?)
                }
                "crm" => changes.crm = Some(Crm::parse(mailbox.crm.as_ref())?),
                "password" => new_password = Some(domain::password("password", &req.password)?),
                other => {
                    return Err(MailboxError::InvalidArgument(format!(
                        "`{other}` cannot be changed; update_mask takes name, sender_name, imap, smtp, password, crm (transfer the owner with TransferMailbox)"
                    )))
                }
            }
            if !changed.contains(path) {
                changed.push(path.clone());
            }
        }
        let credentials_changed =
            new_password.is_some() || changes.imap.is_some() || changes.smtp.is_some();
        if credentials_changed {
            let password = match &new_password {
                Some(p) => p.clone(),
                None => {
                    let mut conn = self.pool.acquire().await?;
                    let sealed = store::sealed_password(&mut conn, id).await?;
                    self.keys.open(&sealed, &seal_context(id))?
                }
            };
            let imap = changes.imap.clone().unwrap_or_else(|| row.imap());
            let smtp = changes.smtp.clone().unwrap_or_else(|| row.smtp());
            self.rate_limit(&caller).await?;
            self.prober
                .check_both(&imap, &smtp, &password)
                .await
                .map_err(MailboxError::Login)?;
            if let Some(p) = &new_password {
                let sealed = self.keys.seal(p.expose_secret(), &seal_context(id))?;
                changes.sealed_password =
                    Some((sealed, self.keys.newest_id().unwrap_or_default().to_owned()));
            }
            changes.reset_state = true;
        }
        let mut tx = self.pool.begin().await?;
        if store::get(&mut *tx, row.org_id, id, true).await?.is_none() {
            return Err(MailboxError::NotFound(id.to_string()));
        }
        let updated = store::update(&mut tx, id, &changes).await?;
        events::publish(
            &mut tx,
            &updated,
            &caller.actor,
            ev::envelope::Payload::MailboxUpdated(ev::MailboxUpdated {
                mailbox: Some(events::snapshot(&updated)),
                changed_fields: changed,
            }),
        )
        .await?;
        if credentials_changed {
            events::request_sync(
                &mut tx,
                &updated,
                &caller.actor,
                ev::SyncPriority::High,
                "credentials_changed",
            )
            .await?;
        }
        tx.commit().await?;
        let readers = self
            .access
            .mail_readers(&[(updated.id, updated.owner_user_id)])
            .await?;
        Ok(view::to_proto(&updated, &Columns::all(), Some(&readers)))
    }

    #[tracing::instrument(skip_all)]
    pub async fn disconnect(
        &self,
        principal: &Principal,
        req: pb::DisconnectMailboxRequest,
    ) -> Result<()> {
        let caller = caller(principal, &Uuid::nil().to_string())?;
        let id = mailbox_id(&req.id)?;
        let row = self
            .authorized(&caller, id, Permission::MailboxModify)
            .await?;
        let mut tx = self.pool.begin().await?;
        if store::get(&mut *tx, row.org_id, id, true).await?.is_none() {
            return Err(MailboxError::NotFound(id.to_string()));
        }
        store::delete(&mut tx, id).await?;
        events::publish(
            &mut tx,
            &row,
            &caller.actor,
            ev::envelope::Payload::MailboxDisconnected(ev::MailboxDisconnected {
                mailbox_id: row.id.to_string(),
                owner_user_id: row.owner_user_id.to_string(),
                email: row.email.clone(),
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(mailbox = %id, "mailbox disconnected");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn sync_now(
        &self,
        principal: &Principal,
        req: pb::SyncMailboxNowRequest,
    ) -> Result<pb::SyncMailboxNowResponse> {
        let caller = caller(principal, &Uuid::nil().to_string())?;
        let id = mailbox_id(&req.id)?;
        let row = self
            .authorized(&caller, id, Permission::MailboxSync)
            .await?;
        if row.state() == SyncState::AuthFailed {
            return Err(MailboxError::FailedPrecondition(format!(
                "the mail server refused this mailbox's password ({}); it is parked until the password or server settings are edited (UpdateMailbox)",
                row.sync_error
            )));
        }
        let mut tx = self.pool.begin().await?;
        events::request_sync(
            &mut tx,
            &row,
            &caller.actor,
            ev::SyncPriority::High,
            "sync_now",
        )
        .await?;
        tx.commit().await?;
        let now = chrono::Utc::now();
        Ok(pb::SyncMailboxNowResponse {
            queued_time: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: now.timestamp_subsec_nanos() as i32,
            }),
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn transfer(
        &self,
        principal: &Principal,
        req: pb::TransferMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let caller = caller(principal, &Uuid::nil().to_string())?;
        let id = mailbox_id(&req.id)?;
        let to = domain::user_id("new_owner_user_id", &req.new_owner_user_id)?;
        let row = self
            .authorized(&caller, id, Permission::MailboxModify)
            .await?;
        if row.owner_user_id == to {
            return Err(MailboxError::FailedPrecondition(
                "the mailbox already belongs to that user".into(),
            ));
        }
        let scope = self
            .scope(&caller, Permission::MailboxModify, &[to])
            .await?;
        if !matches!(&scope, Scope::WholeOrganization)
            && !matches!(&scope, Scope::Some { owners, .. } if owners.contains(&to))
        {
            return Err(MailboxError::PermissionDenied(
                "you may give a mailbox only to someone whose mailboxes you may change".into(),
            ));
        }
        let owner = self.owner(row.org_id, to).await?;
        if !owner.active {
            return Err(MailboxError::FailedPrecondition(format!(
                "user `{to}` is not active; a mailbox goes to an active user"
            )));
        }
        let mut tx = self.pool.begin().await?;
        let current = store::get(&mut *tx, row.org_id, id, true)
            .await?
            .ok_or_else(|| MailboxError::NotFound(id.to_string()))?;
        let moved = store::transfer(&mut tx, id, &owner).await?;
        events::publish(
            &mut tx,
            &moved,
            &caller.actor,
            ev::envelope::Payload::MailboxTransferred(ev::MailboxTransferred {
                mailbox: Some(events::snapshot(&moved)),
                previous_owner_user_id: current.owner_user_id.to_string(),
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(mailbox = %id, from = %current.owner_user_id, to = %to, "mailbox transferred");
        Ok(view::to_proto(&moved, &Columns::all(), None))
    }

    #[tracing::instrument(skip_all, fields(filter = %req.filter, order_by = %req.order_by))]
    pub async fn list(
        &self,
        principal: &Principal,
        req: pb::ListMailboxesRequest,
    ) -> Result<pb::ListMailboxesResponse> {
        let caller = caller(principal, &req.org_id)?;
        let filter = list::parse_filter(&req.filter)?;
        let order = list::parse_order(&req.order_by)?;
        let saved = match caller.user {
            Some(user) if req.read_mask.is_none() || req.page_size == 0 => {
                store::list_view(&self.pool, user).await?
            }
            _ => None,
        };
        let columns = match &req.read_mask {
            Some(mask) if !mask.paths.is_empty() => Columns::parse(&mask.paths)?,
            _ => Columns::parse(
                &saved
                    .as_ref()
                    .map(|v| v.columns.clone())
                    .unwrap_or_else(view::default_columns),
            )?,
        };
        let default_page = saved
            .as_ref()
            .map(|v| v.page_size)
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_PAGE);
        let page_size = aip::page_size(req.page_size, default_page, MAX_PAGE)?;
        let query = format!(
            "{}|{}|{}|{}",
            caller.key,
            caller.org,
            req.filter.trim(),
            req.order_by.trim()
        );
        let after: Option<Cursor> = self.tokens.decode(&query, &req.page_token)?;

        let (scope, reads) = {
            let mut users = Vec::new();
            if let Some(f) = &filter {
                f.access_by_users(&mut users);
            }
            if users.len() > 8 {
                return Err(MailboxError::InvalidArgument(
                    "a filter names at most 8 users in access_by".into(),
                ));
            }
            let scope = self.scope(&caller, Permission::MailboxView, &[]);
            let reads = futures::future::try_join_all(users.iter().map(|u| async move {
                Ok::<_, MailboxError>((
                    *u,
                    self.access
                        .scope(*u, Permission::MailboxReadMail, &[])
                        .await?,
                ))
            }));
            futures::future::try_join(scope, reads).await?
        };

        let mut page: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {}, {} FROM mailboxes",
            store::COLUMNS,
            list::sort_value_sql(order)
        ));
        list::push_where(&mut page, caller.org, &scope, filter.as_ref(), &reads);
        list::push_page(&mut page, order, after.as_ref(), page_size + 1);
        let mut count: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM mailboxes");
        list::push_where(&mut count, caller.org, &scope, filter.as_ref(), &reads);
        count.push(" LIMIT ");
        count.push_bind(EXACT_COUNT_UP_TO + 1);
        count.push(") AS matching");

        let rows_query = page.build_query_as::<view::ListedRow>();
        let count_query = count.build_query_scalar::<i64>();
        let (rows, mut total) = futures::future::try_join(
            rows_query.fetch_all(&self.pool),
            count_query.fetch_one(&self.pool),
        )
        .await?;
        let estimated = total > EXACT_COUNT_UP_TO;
        if estimated {
            let mut explain: QueryBuilder<Postgres> =
                QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM mailboxes");
            list::push_where(&mut explain, caller.org, &scope, filter.as_ref(), &reads);
            let plan: sqlx::types::Json<serde_json::Value> =
                explain.build_query_scalar().fetch_one(&self.pool).await?;
            let rows = plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64;
            total = rows.max(EXACT_COUNT_UP_TO + 1);
        }
        let mut rows = rows;
        let more = rows.len() as i64 > page_size;
        rows.truncate(page_size as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => self.tokens.encode(
                &query,
                &Cursor {
                    value: last.sort_value.clone(),
                    id: last.row.id,
                },
            ),
            _ => String::new(),
        };
        let readers = if columns.access_by {
            let pairs: Vec<(Uuid, Uuid)> = rows
                .iter()
                .map(|r| (r.row.id, r.row.owner_user_id))
                .collect();
            Some(self.access.mail_readers(&pairs).await?)
        } else {
            None
        };
        Ok(pb::ListMailboxesResponse {
            mailboxes: rows
                .iter()
                .map(|r| view::to_proto(&r.row, &columns, readers.as_ref()))
                .collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
            total_size_is_estimate: estimated,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_view(&self, principal: &Principal) -> Result<pb::ListView> {
        let user = view_owner(principal)?;
        let saved = store::list_view(&self.pool, user).await?;
        Ok(view::view_to_proto(saved))
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_view(
        &self,
        principal: &Principal,
        req: pb::UpdateListViewRequest,
    ) -> Result<pb::ListView> {
        let user = view_owner(principal)?;
        let Principal::User { org_id, .. } = principal else {
            return Err(MailboxError::InvalidArgument(
                "list views belong to people".into(),
            ));
        };
        let v = req.view.unwrap_or_default();
        let columns = if v.columns.is_empty() {
            view::default_columns()
        } else {
            Columns::parse(&v.columns)?;
            let mut seen = HashSet::new();
            for c in &v.columns {
                if !seen.insert(c) {
                    return Err(MailboxError::InvalidArgument(format!(
                        "column `{c}` appears twice"
                    )));
                }
            }
            v.columns.clone()
        };
        list::parse_filter(&v.filter)?;
        list::parse_order(&v.order_by)?;
        aip::page_size(v.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        if v.page_size > MAX_PAGE {
            return Err(MailboxError::InvalidArgument(format!(
                "page_size is at most {MAX_PAGE}"
            )));
        }
        let row = ListViewRow {
            columns,
            filter: v.filter.trim().to_owned(),
            order_by: v.order_by.trim().to_owned(),
            page_size: v.page_size,
        };
        store::save_list_view(&self.pool, user, org_id.into_uuid(), &row).await?;
        Ok(view::view_to_proto(Some(row)))
    }

    #[tracing::instrument(skip_all)]
    pub async fn reseal(
        &self,
        principal: &Principal,
        req: pb::ResealCredentialsRequest,
    ) -> Result<pb::ResealCredentialsResponse> {
        if !matches!(principal, Principal::Service { .. }) {
            return Err(MailboxError::PermissionDenied(
                "re-sealing credentials is the operator's: call with a service credential (mailroom ctl mailboxes rotate-key)".into(),
            ));
        }
        let batch = match req.batch_size {
            n if n < 0 => {
                return Err(MailboxError::InvalidArgument(
                    "batch_size cannot be negative".into(),
                ))
            }
            0 => 500,
            n => i64::from(n.min(5_000)),
        };
        let key_id = self
            .keys
            .newest_id()
            .ok_or_else(|| MailboxError::Internal("no sealing key configured".into()))?
            .to_owned();
        let mut tx = self.pool.begin().await?;
        let stale = store::stale_sealed(&mut tx, &key_id, batch).await?;
        let mut resealed = 0i64;
        for (id, sealed) in &stale {
            let context = seal_context(*id);
            let secret = self.keys.open(sealed, &context).map_err(|e| {
                MailboxError::FailedPrecondition(format!(
                    "mailbox `{id}`'s password cannot be opened with the configured keys ({e}); keep the key it was sealed with configured until the rotation ends"
                ))
            })?;
            let fresh = self.keys.seal(secret.expose_secret(), &context)?;
            store::reseal(&mut tx, *id, &fresh, &key_id).await?;
            resealed += 1;
        }
        tx.commit().await?;
        let remaining = store::count_stale_sealed(&self.pool, &key_id).await?;
        tracing::info!(resealed, remaining, key = %key_id, "credentials re-sealed");
        Ok(pb::ResealCredentialsResponse {
            resealed,
            remaining,
            key_id,
        })
    }
}

impl Mailboxes {
    /// What a sync worker needs to log in: for the sync service's own credential only.
    #[tracing::instrument(skip_all, fields(mailbox = %req.mailbox_id))]
    pub async fn credentials(
        &self,
        principal: &Principal,
        req: pb::GetMailboxCredentialsRequest,
    ) -> Result<pb::MailboxLogin> {
        if !matches!(principal, Principal::Service { name } if name == SYNC_CLIENT) {
            return Err(MailboxError::PermissionDenied(
                "mailbox credentials are handed to the sync service only".into(),
            ));
        }
        let id = mailbox_id(&req.mailbox_id)?;
        let mut conn = self.pool.acquire().await?;
        let row = store::get_any(&mut *conn, id)
            .await?
            .ok_or_else(|| MailboxError::NotFound(req.mailbox_id.clone()))?;
        let sealed = store::sealed_password(&mut conn, id).await?;
        let password = self.keys.open(&sealed, &seal_context(id)).map_err(|e| {
            MailboxError::FailedPrecondition(format!(
                "mailbox `{id}`'s password cannot be opened with the configured keys ({e}); configure the key it was sealed with"
            ))
        })?;
        let imap = row.imap();
        Ok(pb::MailboxLogin {
            mailbox_id: row.id.to_string(),
            org_id: row.org_id.to_string(),
            owner_user_id: row.owner_user_id.to_string(),
            email: row.email.clone(),
            imap_host: imap.host,
            imap_port: i32::from(imap.port),
            imap_security: crate::domain::security_to_proto(imap.security) as i32,
            imap_username: imap.username,
            password: password.expose_secret().to_owned(),
            in_crm: row.in_crm,
        })
    }
}

/// The sync service's client id at identity: the one caller given mailbox credentials.
pub const SYNC_CLIENT: &str = "sync";

fn view_owner(principal: &Principal) -> Result<Uuid> {
    match principal {
        Principal::User { user_id, .. } => Ok(user_id.into_uuid()),
        Principal::Service { .. } => Err(MailboxError::InvalidArgument(
            "list views belong to people; a service passes its columns in read_mask".into(),
        )),
    }
}
