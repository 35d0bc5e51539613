//! Connecting mailboxes: one (`ConnectMailbox`), or up to [`MAX_BULK`] of one domain sharing
//! their server settings (`ConnectMailboxes`, each item answered on its own).
//!
//! A connect checks, in order: that the caller's roles let them connect for the owner
//! (`mailbox.connect`, one's own mailboxes included), that the owner is an active
//! user of the organisation, that everyone in its CRM queue is one too, that the address is
//! not connected there yet, that the organisation is below its mailbox limit, the caller's
//! rate of login checks, and then both logins for real (IMAP and SMTP, see
//! [`crate::probe`]). Only then is the password sealed and the mailbox saved, with its event
//! and a sync request, in one transaction that counts the organisation's mailboxes again
//! under a lock of that organisation's, so concurrent connects cannot pass the limit
//! together. `validate_only` runs every check and saves nothing.
//!
//! Every connect holds one of the process's login-check slots (`login_concurrency`, shared
//! by every caller and every ConnectMailboxes item), so concurrent requests cannot multiply
//! the probes the registry makes. Access control is asked, and the owner looked up, before
//! the slot is taken (waiting for a user made a moment ago holds none); ConnectMailboxes
//! asks access control once for all the owners it names.

use std::collections::HashSet;
use std::sync::Arc;

use mailroom_platform::auth::Principal;
use mailroom_platform::error::{ApiError as _, DisplayChain, ErrorKind};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::mailboxes::v1 as pb;
use mailroom_types::{MailboxId, OrgId, UserId};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::domain::{self, Crm, Protocol, ServerSettings};
use crate::error::{MailboxError, Result};
use crate::events;
use crate::probe::{Failure, Step};
use crate::service::{seal_context, Caller, Mailboxes};
use crate::store::{self, MailboxRow, NewMailbox, Owner};
use crate::view::{self, Columns};

/// The most mailboxes one ConnectMailboxes call takes.
pub const MAX_BULK: usize = 100;

/// One mailbox to connect, parsed.
struct Connect {
    email: String,
    owner: Option<UserId>,
    name: String,
    sender_name: String,
    imap: ServerSettings,
    smtp: ServerSettings,
    crm: Crm,
    /// The request's `crm.queue_user_ids`, for a refusal naming its position.
    queue_ids: Vec<String>,
    password: SecretString,
}

impl Connect {
    fn parse(
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
            queue_ids: mailbox
                .crm
                .as_ref()
                .map(|crm| crm.queue_user_ids.clone())
                .unwrap_or_default(),
            password: domain::password("password", password)?,
            owner,
            email,
        })
    }
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
        // (A limit reached has no failure value of its own yet: the message names it.)
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
            let message = match err.kind() {
                ErrorKind::Internal => {
                    tracing::error!(error = %DisplayChain(&err), "connect failed");
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

impl Mailboxes {
    #[tracing::instrument(skip_all)]
    pub async fn connect(
        &self,
        principal: &Principal,
        req: pb::ConnectMailboxRequest,
    ) -> Result<pb::Mailbox> {
        let mailbox = req.mailbox.unwrap_or_default();
        let caller = Caller::of(principal);
        let org = caller.org(&mailbox.org_id)?;
        let parsed = Connect::parse(
            &mailbox,
            &req.password,
            mailbox.imap.as_ref(),
            mailbox.smtp.as_ref(),
        )?;
        let owner_id = owner_of(&caller, &parsed)?;
        let allowed = self.may_connect_for(&caller, owner_id).await?;
        let owner = self.admit_owner(&caller, org, owner_id, allowed).await?;
        let _slot = self.login_slot().await?;
        let row = self
            .connect_one(&caller, org, owner, parsed, req.validate_only)
            .await?;
        Ok(view::to_proto(&row, &Columns::all(), None))
    }

    /// The refusal of a connect to an organisation that has `count` mailboxes, its limit.
    fn limit_reached(&self, count: i64) -> MailboxError {
        MailboxError::LimitReached(format!(
            "the organisation has {count} mailboxes connected and may connect at most {} (max_mailboxes_per_org); disconnect one first, or ask the operator to raise MAILROOM_MAILBOXES__MAX_MAILBOXES_PER_ORG",
            self.max_mailboxes_per_org
        ))
    }

    /// The owner of a connect the caller's roles `allowed` (or not: the refusal says what
    /// they lack), once they are an active user of `org`. Asked before a login-check slot is
    /// taken, so waiting for a user made a moment ago holds none.
    async fn admit_owner(
        &self,
        caller: &Caller,
        org: OrgId,
        owner_id: UserId,
        allowed: bool,
    ) -> Result<Owner> {
        // Everyone's roles decide, for their own mailboxes too: a role may let nobody connect.
        if !allowed {
            return Err(self.connect_refused(caller, org, owner_id, false).await?);
        }
        let owner = self.owner(org, owner_id).await?;
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
        Ok(owner)
    }

    /// The rest of a connect for an admitted `owner`, holding a login-check slot.
    async fn connect_one(
        &self,
        caller: &Caller,
        org: OrgId,
        owner: Owner,
        c: Connect,
        validate_only: bool,
    ) -> Result<MailboxRow> {
        self.check_queue(org, &c.crm, &c.queue_ids).await?;
        if store::connected_at(&self.pool, org, &c.email)
            .await?
            .is_some()
        {
            return Err(MailboxError::AlreadyConnected(format!(
                "{} is already connected in this organisation; edit that mailbox instead (UpdateMailbox)",
                c.email
            )));
        }
        // Before any login check: an organisation at its limit costs no mail server a login.
        let count = store::count_in_org(&self.pool, org).await?;
        if u64::try_from(count).unwrap_or(0) >= self.max_mailboxes_per_org {
            return Err(self.limit_reached(count));
        }
        self.rate_limit(caller).await?;
        self.prober
            .check_both(&c.imap, &c.smtp, &c.password)
            .await
            .map_err(MailboxError::Login)?;
        let id = MailboxId::new();
        let sealed = self
            .keys
            .seal(c.password.expose_secret(), &seal_context(id))?;
        let key_id = self.keys.newest_id().unwrap_or_default().to_owned();
        let mut tx = self.pool.begin().await?;
        // Counted again under the organisation's lock, held until commit: of concurrent
        // connects only as many as the limit leaves room for are saved.
        let admitted = store::insert_within_limit(
            &mut tx,
            &NewMailbox {
                id,
                org_id: org,
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
            self.max_mailboxes_per_org,
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
        let row = match admitted {
            store::Admitted::Inserted(row) => *row,
            store::Admitted::Full { count } => return Err(self.limit_reached(count)),
        };
        if validate_only {
            tx.rollback().await?;
            // Nothing was saved: the answer carries no id.
            return Ok(MailboxRow {
                id: MailboxId::default(),
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
        self: &Arc<Self>,
        principal: &Principal,
        req: pb::ConnectMailboxesRequest,
    ) -> Result<pb::ConnectMailboxesResponse> {
        let caller = Caller::of(principal);
        let Some(person) = caller.person else {
            return Err(MailboxError::InvalidArgument(
                "ConnectMailboxes is for people; a service connects one mailbox at a time with ConnectMailbox and an org_id".into(),
            ));
        };
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
            let parsed = Connect::parse(&mailbox, &m.password, req.imap.as_ref(), req.smtp.as_ref())
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
        // Who the caller may connect for, asked once for every owner named (a wait for people
        // made a moment ago is one for all of them), before any slot is taken.
        let owners: Vec<UserId> = items
            .iter()
            .filter_map(|(_, _, parsed)| parsed.as_ref().ok())
            .filter_map(|c| owner_of(&caller, c).ok())
            .collect();
        let allowed = Arc::new(self.may_connect_for_each(&caller, &owners).await?);
        // Each item is a task of its own, holding one of the process's login-check slots
        // (shared with every other request), so the checks run side by side on every core,
        // one slow server holds up only its own item, and concurrent requests together make
        // no more checks at once than the process allows. An item waits for its slot as long
        // as the request lasts (its tasks end when the caller goes away).
        let permits = self.login_permits.clone();
        let validate_only = req.validate_only;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, email, parsed) in items {
            let this = self.clone();
            let caller = caller.clone();
            let permits = permits.clone();
            let allowed = allowed.clone();
            tasks.spawn(async move {
                let outcome = match parsed {
                    Ok(c) => {
                        this.connect_item(&caller, person.org, c, &allowed, permits, validate_only)
                            .await
                    }
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

    /// One ConnectMailboxes item: admitted (`allowed`: whom the caller may connect for), then
    /// connected holding one of `permits`.
    async fn connect_item(
        &self,
        caller: &Caller,
        org: OrgId,
        c: Connect,
        allowed: &HashSet<UserId>,
        permits: Arc<Semaphore>,
        validate_only: bool,
    ) -> Result<MailboxRow> {
        let owner_id = owner_of(caller, &c)?;
        let owner = self
            .admit_owner(caller, org, owner_id, allowed.contains(&owner_id))
            .await?;
        let _permit = permits.acquire_owned().await.map_err(|_closed| {
            MailboxError::Internal("the login-check slots were closed".into())
        })?;
        self.connect_one(caller, org, owner, c, validate_only).await
    }
}

/// Whom a connect is for: the owner it names, else the calling person.
fn owner_of(caller: &Caller, c: &Connect) -> Result<UserId> {
    c.owner.or(caller.user()).ok_or_else(|| {
        MailboxError::InvalidArgument(
            "a service caller names the owner: set mailbox.owner_user_id".into(),
        )
    })
}
