//! Making invitations: by email (a pasted list, sent by Mailroom or composed for the inviter's
//! own mail client), by direct registration, and through a quick-registration link.
//!
//! Every path goes through [`Invitations::admit`]:
//! 1. the rows are written as `admitting` (the partial unique index on open invitations per
//!    address settles a race between two inviters of one address);
//! 2. identity is asked for the INVITED users in one call, which claims the addresses and
//!    counts the seats for the whole batch under the organisation's lock;
//! 3. the admitted rows become `pending` (mail queued) or `awaiting_approval`, with their
//!    events, in one transaction; the others are deleted and reported.
//!
//! A crash between 1 and 3 leaves `admitting` rows, which the sweeper finishes by asking
//! identity again with the same user ids (identity admits nothing twice).

use std::collections::HashMap;

use chrono::Utc;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::{DepartmentId, OrgId, Permission, UserId};
use uuid::Uuid;

use crate::domain::{self, Delivery, DeliveryState, EmailAddress, Entry, Kind, Locale, State};
use crate::error::{InvitationError, Result};
use crate::events::{publish, Change};
use crate::service::{parse_optional_id, Caller, Invitations};
use crate::store::{InvitationRow, INVITATION_COLUMNS};
use crate::templates::{self, Fill, Purpose};
use crate::token;

/// One address to admit, with the names given for it (direct and link registration).
pub struct Invitee {
    pub input: String,
    pub email: EmailAddress,
    pub first_name: String,
    pub last_name: String,
    pub position: String,
}

/// What is the same for every invitee of one call.
pub struct Batch {
    pub org_id: Uuid,
    pub inviter: Uuid,
    pub kind: Kind,
    pub delivery: Delivery,
    /// `Pending`, or `AwaitingApproval` for a link that needs an admin.
    pub target: State,
    pub department_id: Option<Uuid>,
    pub link_id: Option<Uuid>,
    pub message: String,
    pub locale: Locale,
    pub names: Names,
    pub actor: EventActor,
}

/// The names a mail and the registration page show.
#[derive(Default, Clone)]
pub struct Names {
    pub organization: String,
    pub inviter: String,
    pub department: String,
}

/// An address not invited, and why.
pub struct Rejected {
    pub input: String,
    pub code: pb::RejectionReason,
    pub reason: String,
    pub user_id: Option<Uuid>,
    pub user_state: String,
}

/// What one admission produced: the invitations (with their link secret when the caller
/// hands the link on: own mail client), and the refusals.
pub struct Admitted {
    pub invitations: Vec<(InvitationRow, Option<String>)>,
    pub rejected: Vec<Rejected>,
}

fn display_name(u: &ipb::User) -> String {
    let name = format!("{} {}", u.first_name, u.last_name);
    let name = name.trim();
    if name.is_empty() {
        u.login_email.clone()
    } else {
        name.to_owned()
    }
}

fn state_word(state: i32) -> &'static str {
    match ipb::UserState::try_from(state).unwrap_or_default() {
        ipb::UserState::Invited => "INVITED",
        ipb::UserState::Active => "ACTIVE",
        ipb::UserState::Dismissed => "DISMISSED",
        ipb::UserState::Unspecified => "",
    }
}

impl Invitations {
    /// The organisation's, the caller's and the department's names, read at identity.
    pub async fn names(&self, caller: &Caller, department: Option<Uuid>) -> Result<Names> {
        // The caller's own profile is read with their token, so identity scopes it as usual.
        let as_caller = self.identity.as_person(caller.bearer.clone());
        let (org, me, dep) = tokio::join!(
            self.identity.organization(OrgId::from_uuid(caller.org_id)),
            as_caller.user(UserId::from_uuid(caller.user_id)),
            async {
                match department {
                    Some(d) => as_caller
                        .department(DepartmentId::from_uuid(d))
                        .await
                        .map(Some)
                        .map_err(InvitationError::from),
                    None => Ok(None),
                }
            }
        );
        Ok(Names {
            organization: org?.display_name,
            inviter: display_name(&me?),
            department: dep
                .map_err(|e| match e {
                    InvitationError::NotFound(_) => InvitationError::NotFound(format!(
                        "department `{}` was not found in your organisation",
                        department.unwrap_or_default()
                    )),
                    other => other,
                })?
                .map(|d| d.name)
                .unwrap_or_default(),
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn create_invitations(
        &self,
        caller: &Caller,
        req: pb::CreateInvitationsRequest,
    ) -> Result<(Admitted, Option<pb::ComposedMessage>)> {
        let entries = domain::address_list(&req.emails)?;
        let message = domain::message(&req.message)?;
        let locale = Locale::parse(&req.locale)?;
        let department_id = parse_optional_id("department_id", &req.department_id)?;
        let delivery = match pb::DeliveryMethod::try_from(req.delivery).unwrap_or_default() {
            pb::DeliveryMethod::Unspecified | pb::DeliveryMethod::SystemMail => {
                Delivery::SystemMail
            }
            pb::DeliveryMethod::OwnMailClient => Delivery::OwnMailClient,
        };
        self.require(caller, Permission::OrgInvite).await?;
        // With their own mail client the inviter holds every link, and could accept one
        // for an address that is not theirs: that is registering people, an admin's right.
        if delivery == Delivery::OwnMailClient
            && !self.holds(caller, Permission::OrgRegisterUsers).await?
        {
            return Err(InvitationError::PermissionDenied(
                "sending invitations from your own mail client gives you each invitee's link, so it needs `org.register_users` (admins); invite with Mailroom's mail (SYSTEM_MAIL) instead".into(),
            ));
        }

        let mut rejected = Vec::new();
        let mut invitees = Vec::new();
        for entry in entries {
            match entry {
                Entry::Address { input, address } => invitees.push(Invitee {
                    input,
                    email: address,
                    first_name: String::new(),
                    last_name: String::new(),
                    position: String::new(),
                }),
                Entry::Malformed { input, reason } => rejected.push(Rejected {
                    input,
                    code: pb::RejectionReason::Malformed,
                    reason,
                    user_id: None,
                    user_state: String::new(),
                }),
                Entry::Duplicate { input, address } => rejected.push(Rejected {
                    input,
                    code: pb::RejectionReason::Duplicate,
                    reason: format!("{address} is already earlier in this list"),
                    user_id: None,
                    user_state: String::new(),
                }),
            }
        }
        if let (Some(limits), n @ 1..) = (&self.limits, invitees.len() as u32) {
            self.spend(
                &limits.per_inviter,
                &caller.user_id.to_string(),
                n,
                "per inviter and hour",
            )
            .await?;
            self.spend(
                &limits.per_org,
                &caller.org_id.to_string(),
                n,
                "per organisation and hour",
            )
            .await?;
        }
        if invitees.is_empty() {
            return Ok((
                Admitted {
                    invitations: Vec::new(),
                    rejected,
                },
                None,
            ));
        }
        let names = self.names(caller, department_id).await?;
        let batch = Batch {
            org_id: caller.org_id,
            inviter: caller.user_id,
            kind: Kind::Email,
            delivery,
            target: State::Pending,
            department_id,
            link_id: None,
            message,
            locale,
            names,
            actor: caller.actor(),
        };
        let mut admitted = self.admit(&batch, invitees).await?;
        admitted.rejected.splice(0..0, rejected);
        let composed = if delivery == Delivery::OwnMailClient {
            Some(self.compose(&batch, &admitted).await?)
        } else {
            None
        };
        Ok((admitted, composed))
    }

    /// What an inviter sends from their own mail client: the subject, the body with `{link}`
    /// left for each invitee's link, and one `mailto:` per invitee with it filled in.
    async fn compose(&self, batch: &Batch, admitted: &Admitted) -> Result<pb::ComposedMessage> {
        let template = self
            .template(batch.org_id, Purpose::Invitation, batch.locale)
            .await?;
        let expires = Utc::now() + self.ttl();
        fn fill<'a>(batch: &'a Batch, link: &'a str, expires: chrono::DateTime<Utc>) -> Fill<'a> {
            Fill {
                organization: &batch.names.organization,
                inviter: &batch.names.inviter,
                link,
                expires,
                message: &batch.message,
            }
        }
        let generic = templates::render(&template, &fill(batch, "{link}", expires), batch.locale);
        let mut composed = pb::ComposedMessage {
            subject: generic.subject,
            body: generic.body,
            ..Default::default()
        };
        for (row, secret) in &admitted.invitations {
            let link = self.accept_link(secret.as_deref().unwrap_or_default());
            let mail = templates::render(&template, &fill(batch, &link, expires), batch.locale);
            composed
                .mailto_links
                .push(templates::mailto(&row.email, &mail.subject, &mail.body));
            composed.invitation_links.push(link);
        }
        Ok(composed)
    }

    /// The organisation's wording for `purpose` in `locale`, or the shipped one.
    pub async fn template(
        &self,
        org_id: Uuid,
        purpose: Purpose,
        locale: Locale,
    ) -> Result<templates::Template> {
        if purpose == Purpose::Invitation {
            let custom: Option<(String, String)> = sqlx::query_as(
                "SELECT subject, body FROM invitation_templates WHERE org_id = $1 AND locale = $2",
            )
            .bind(org_id)
            .bind(locale.code())
            .fetch_optional(&self.pool)
            .await?;
            if let Some((subject, body)) = custom {
                return Ok(templates::Template { subject, body });
            }
        }
        Ok(templates::shipped(purpose, locale))
    }

    /// The three steps in the module docs.
    #[tracing::instrument(skip_all, fields(invitees = invitees.len()))]
    pub async fn admit(&self, batch: &Batch, invitees: Vec<Invitee>) -> Result<Admitted> {
        let mut rejected = Vec::new();
        let addresses: Vec<String> = invitees.iter().map(|i| i.email.to_string()).collect();

        // Already invited (and not yet over): said plainly, with the way out.
        let open: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT email, user_id FROM invitations WHERE org_id = $1 AND email = ANY($2) \
             AND state IN ('admitting', 'pending', 'failed', 'awaiting_approval')",
        )
        .bind(batch.org_id)
        .bind(&addresses)
        .fetch_all(&self.pool)
        .await?;
        let open: HashMap<String, Uuid> = open.into_iter().collect();
        let already = |input: String, email: &EmailAddress, user: Option<Uuid>| {
            Rejected {
            input,
            code: pb::RejectionReason::AlreadyInvited,
            reason: format!(
                "{email} already has an open invitation; resend it (ResendInvitation) or revoke it first"
            ),
            user_id: user,
            user_state: "INVITED".into(),
        }
        };
        let mut fresh = Vec::with_capacity(invitees.len());
        for invitee in invitees {
            match open.get(invitee.email.as_str()) {
                Some(user) => rejected.push(already(invitee.input, &invitee.email, Some(*user))),
                None => fresh.push(invitee),
            }
        }

        // 1. The rows, as `admitting`.
        let ids: Vec<Uuid> = fresh.iter().map(|_| Uuid::now_v7()).collect();
        let users: Vec<Uuid> = fresh.iter().map(|_| Uuid::now_v7()).collect();
        let emails: Vec<String> = fresh.iter().map(|i| i.email.to_string()).collect();
        let firsts: Vec<String> = fresh.iter().map(|i| i.first_name.clone()).collect();
        let lasts: Vec<String> = fresh.iter().map(|i| i.last_name.clone()).collect();
        let positions: Vec<String> = fresh.iter().map(|i| i.position.clone()).collect();
        let expires = Utc::now() + self.ttl();
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO invitations (id, org_id, email, kind, state, delivery, delivery_state, inviter_user_id, user_id, \
             department_id, registration_link_id, message, locale, first_name, last_name, position, organization_name, \
             inviter_name, department_name, expires_at) \
             SELECT t.id, $1, t.email, $2, 'admitting', $3, 'not_sent', $4, t.user_id, $5, $6, $7, $8, t.first, t.last, t.position, \
             $9, $10, $11, $12 \
             FROM UNNEST($13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::text[], $18::text[]) \
               AS t(id, user_id, email, first, last, position) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(batch.org_id)
        .bind(batch.kind.as_db())
        .bind(batch.delivery.as_db())
        .bind(batch.inviter)
        .bind(batch.department_id)
        .bind(batch.link_id)
        .bind(&batch.message)
        .bind(batch.locale.code())
        .bind(&batch.names.organization)
        .bind(&batch.names.inviter)
        .bind(&batch.names.department)
        .bind(expires)
        .bind(&ids)
        .bind(&users)
        .bind(&emails)
        .bind(&firsts)
        .bind(&lasts)
        .bind(&positions)
        .fetch_all(&self.pool)
        .await?;
        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
        let mut asked = Vec::new();
        for (k, invitee) in fresh.into_iter().enumerate() {
            if inserted.contains(&ids[k]) {
                asked.push((ids[k], users[k], invitee));
            } else {
                // Another inviter's invitation of the same address won the race.
                rejected.push(already(invitee.input, &invitee.email, None));
            }
        }
        if asked.is_empty() {
            return Ok(Admitted {
                invitations: Vec::new(),
                rejected,
            });
        }

        // 2. Identity: the INVITED users and the seats, for the whole batch at once.
        let request: Vec<ipb::Invitee> = asked
            .iter()
            .map(|(_, user, i)| ipb::Invitee {
                user_id: user.to_string(),
                email: i.email.to_string(),
                first_name: i.first_name.clone(),
                last_name: i.last_name.clone(),
                position: i.position.clone(),
            })
            .collect();
        let asked_ids: Vec<Uuid> = asked.iter().map(|(id, _, _)| *id).collect();
        let answer = match self
            .identity
            .admit(
                OrgId::from_uuid(batch.org_id),
                batch.department_id.map(DepartmentId::from_uuid),
                request,
            )
            .await
            .map_err(InvitationError::from)
        {
            Ok(answer) => answer,
            // Identity said no: nothing was made there; the rows go.
            Err(
                err @ (InvitationError::Seats(_)
                | InvitationError::InvalidArgument(_)
                | InvitationError::NotFound(_)
                | InvitationError::PermissionDenied(_)
                | InvitationError::FailedPrecondition(_)),
            ) => {
                sqlx::query("DELETE FROM invitations WHERE id = ANY($1) AND state = 'admitting'")
                    .bind(&asked_ids)
                    .execute(&self.pool)
                    .await?;
                return Err(err);
            }
            // No answer: identity may have made the users. The rows stay `admitting` and the
            // sweeper finishes them (asking again with the same ids admits nothing twice).
            Err(err) => {
                return Err(InvitationError::Unavailable(format!(
                    "{err}; the invitations are completed once identity answers (see ListInvitations before inviting again)"
                )))
            }
        };
        if answer.admissions.len() != asked.len() {
            return Err(InvitationError::Internal(format!(
                "identity answered {} admissions for {} invitees",
                answer.admissions.len(),
                asked.len()
            )));
        }

        // 3. Pending (or awaiting approval), with their events; the refused ones go.
        let mut admitted_ids = Vec::new();
        let mut refused_ids = Vec::new();
        for ((id, _, invitee), admission) in asked.into_iter().zip(answer.admissions) {
            if admission.admitted {
                admitted_ids.push(id);
                continue;
            }
            refused_ids.push(id);
            let holder = Uuid::parse_str(&admission.holder_user_id).ok();
            let state = state_word(admission.holder_state);
            rejected.push(if state == "INVITED" && open.contains_key(invitee.email.as_str()) {
                already(invitee.input, &invitee.email, holder)
            } else if state == "INVITED" {
                Rejected {
                    input: invitee.input,
                    code: pb::RejectionReason::AlreadyInvited,
                    reason: format!(
                        "{} belongs to an invited user without an open invitation here (an ended invitation is still being closed, or an admin made the account): try again in a few seconds, or see GetEmailAddressUsage",
                        invitee.email
                    ),
                    user_id: holder,
                    user_state: state.into(),
                }
            } else {
                Rejected {
                    input: invitee.input,
                    code: pb::RejectionReason::AlreadyAUser,
                    reason: admission.reason,
                    user_id: holder,
                    user_state: state.into(),
                }
            });
        }
        let invitations = self
            .finish_admission(&admitted_ids, &refused_ids, batch.target, &batch.actor)
            .await?;
        Ok(Admitted {
            invitations,
            rejected,
        })
    }

    /// Step 3 for rows identity admitted (and removal of the ones it refused). Returns the
    /// invitations with the link secret of those the caller hands on themselves.
    pub async fn finish_admission(
        &self,
        admitted: &[Uuid],
        refused: &[Uuid],
        target: State,
        actor: &EventActor,
    ) -> Result<Vec<(InvitationRow, Option<String>)>> {
        let mut tx = self.pool.begin().await?;
        if !refused.is_empty() {
            sqlx::query("DELETE FROM invitations WHERE id = ANY($1) AND state = 'admitting'")
                .bind(refused)
                .execute(&mut *tx)
                .await?;
        }
        // Own-mail-client invitations get their secret now (the inviter sends the link);
        // Mailroom's own mail gets one when it is sent.
        let secrets: Vec<(Uuid, token::NewToken)> =
            admitted.iter().map(|id| (*id, token::generate())).collect();
        let hashes: Vec<Vec<u8>> = secrets.iter().map(|(_, t)| t.hash.clone()).collect();
        let rows: Vec<InvitationRow> = sqlx::query_as(&format!(
            "UPDATE invitations i SET state = $2, \
               delivery_state = CASE WHEN $2 = 'pending' AND i.delivery = 'system_mail' THEN 'queued' ELSE 'not_sent' END, \
               next_attempt_at = CASE WHEN $2 = 'pending' AND i.delivery = 'system_mail' THEN now() END, \
               token_hash = CASE WHEN i.delivery = 'own_mail_client' THEN t.hash END, updated_at = now() \
             FROM UNNEST($1::uuid[], $3::bytea[]) AS t(id, hash) \
             WHERE i.id = t.id AND i.state = 'admitting' RETURNING {}",
            INVITATION_COLUMNS
                .split(", ")
                .map(|c| format!("i.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(admitted)
        .bind(target.as_db())
        .bind(&hashes)
        .fetch_all(&mut *tx)
        .await?;
        let change = || match target {
            State::AwaitingApproval => Change::RegistrationRequested,
            _ => Change::Created,
        };
        for row in &rows {
            publish(&mut tx, row, actor, change()).await?;
        }
        tx.commit().await?;
        if rows
            .iter()
            .any(|r| r.delivery_state() == DeliveryState::Queued)
        {
            self.queued.notify_one();
        }
        let mut secrets: HashMap<Uuid, String> =
            secrets.into_iter().map(|(id, t)| (id, t.secret)).collect();
        let mut by_id: HashMap<Uuid, InvitationRow> = rows.into_iter().map(|r| (r.id, r)).collect();
        // In the order asked for.
        Ok(admitted
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|row| {
                let secret = (row.delivery() == Delivery::OwnMailClient)
                    .then(|| secrets.remove(&row.id))
                    .flatten();
                (row, secret)
            })
            .collect())
    }

    /// RegisterUser: an admin adds a person, who is mailed a link to set their password.
    #[tracing::instrument(skip_all)]
    pub async fn register_user(
        &self,
        caller: &Caller,
        req: pb::RegisterUserRequest,
    ) -> Result<InvitationRow> {
        let email = EmailAddress::parse("email", &req.email)?;
        let first = domain::one_line("first_name", &req.first_name, domain::NAME_MAX)?;
        let last = domain::one_line("last_name", &req.last_name, domain::NAME_MAX)?;
        let position = domain::one_line("position", &req.position, 200)?;
        if first.is_empty() && last.is_empty() {
            return Err(InvitationError::InvalidArgument(
                "`first_name` or `last_name` is required to register a person".into(),
            ));
        }
        let locale = Locale::parse(&req.locale)?;
        let department_id = parse_optional_id("department_id", &req.department_id)?;
        self.require(caller, Permission::OrgRegisterUsers).await?;
        let names = self.names(caller, department_id).await?;
        let batch = Batch {
            org_id: caller.org_id,
            inviter: caller.user_id,
            kind: Kind::DirectRegistration,
            delivery: Delivery::SystemMail,
            target: State::Pending,
            department_id,
            link_id: None,
            message: String::new(),
            locale,
            names,
            actor: caller.actor(),
        };
        let mut admitted = self
            .admit(
                &batch,
                vec![Invitee {
                    input: req.email.clone(),
                    email,
                    first_name: first,
                    last_name: last,
                    position,
                }],
            )
            .await?;
        if let Some((row, _)) = admitted.invitations.pop() {
            return Ok(row);
        }
        let refusal = admitted
            .rejected
            .pop()
            .map(|r| r.reason)
            .unwrap_or_default();
        Err(InvitationError::FailedPrecondition(refusal))
    }
}
