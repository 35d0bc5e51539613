//! Quick-registration links: an admin makes one (optionally for some email domains only,
//! optionally needing approval, optionally for a number of people) and shares it; whoever
//! opens it gives their address and name and is mailed a personal link that confirms the
//! address — after an admin approves, when the link asks for that. The address confirmation is
//! what keeps a link holder from claiming someone else's address.
//!
//! A link may be posted where anyone reads it, so a registration costs the organisation
//! nothing until the address's owner confirms it: no user at identity, no seat, no claim on
//! the address (an admin's invitation of it goes ahead). Using the mailed link
//! ([`Invitations::accept`]) asks identity for the user and the seat under its lock, and is
//! refused with FAILED_PRECONDITION when no seat is free. Unconfirmed registrations expire
//! after `registration_ttl_secs`; one address has one open registration per link, mailed again
//! at most once per `registration_resend_interval_secs`; registrations are limited per client
//! network, per link and network, and per link an hour (failing closed without Redis: anyone
//! may call this; a link's budgets are spent only by registrations that pass its checks); a link
//! with `max_uses` is used up once that many registrations through it were confirmed (counted
//! at confirmation, so unconfirmed spam cannot use it up).
//!
//! Registering answers the same whether or not the address could join (taken, already invited),
//! so a link cannot be used to learn who works at the organisation.

use chrono::Utc;
use mailroom_aip as aip;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_platform::types::Seats;
use mailroom_types::{DepartmentId, InvitationId, OrgId, Permission, RegistrationLinkId, UserId};
use uuid::Uuid;

use crate::client_network::ClientNetwork;
use crate::domain::{self, EmailAddress, Invitee, Locale, State};
use crate::error::{InvitationError, Result};
use crate::events::{publish, Change};
use crate::service::{Caller, Invitations, RegistrationLimit};
use crate::store::links::NewLink;
use crate::store::registrations::NewRegistration;
use crate::store::{self, LinkRow};
use crate::token;

/// The most people one link may be for.
pub const MAX_USES: i32 = 100_000;

fn unknown_link() -> InvitationError {
    InvitationError::NotFound(
        "this registration link is not valid: it may be mistyped, disabled or expired; ask the organisation for a new one".into(),
    )
}

/// A link `max_uses` people have joined through.
pub fn used_up() -> InvitationError {
    InvitationError::FailedPrecondition(
        "this registration link has been used up; ask the organisation for a new one".into(),
    )
}

/// A link whose department was deleted since it was made.
pub fn department_gone() -> InvitationError {
    InvitationError::FailedPrecondition(
        "the department this registration link adds people to no longer exists; ask the organisation for a new link".into(),
    )
}

/// A registration refused for want of a seat, in the same words for every address.
fn no_free_seats() -> InvitationError {
    InvitationError::Seats("the organisation has no free seats; ask its admin".into())
}

/// What a registration through a link answers, whatever happened to the address.
const CHECK_YOUR_MAIL: &str =
    "if this address can join, a mail with a personal link is on its way to it; open it to finish";
const AWAIT_APPROVAL: &str =
    "your registration waits for an admin's approval; once approved, a mail with a personal link goes to this address";

impl Invitations {
    #[tracing::instrument(skip_all)]
    pub async fn create_link(
        &self,
        caller: &Caller,
        req: pb::CreateRegistrationLinkRequest,
    ) -> Result<(LinkRow, String)> {
        let mut domains = req
            .allowed_domains
            .iter()
            .filter(|d| !d.trim().is_empty())
            .map(|d| domain::allowed_domain(d))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        domains.sort();
        domains.dedup();
        if domains.len() > 50 {
            return Err(InvitationError::InvalidArgument(
                "at most 50 allowed domains per link".into(),
            ));
        }
        if req.valid_days < 0 || req.valid_days > 3650 {
            return Err(InvitationError::InvalidArgument(
                "`valid_days` must be 0 (until disabled) to 3650".into(),
            ));
        }
        if req.max_uses.is_some_and(|n| !(1..=MAX_USES).contains(&n)) {
            return Err(InvitationError::InvalidArgument(format!(
                "`max_uses` must be 1 to {MAX_USES}, or left out for no limit"
            )));
        }
        let department_id = DepartmentId::parse_optional("department_id", &req.department_id)?;
        self.require(caller, Permission::OrgRegisterUsers).await?;
        let names = self.names(caller, department_id).await?;
        let secret = token::generate();
        let expires = (req.valid_days > 0)
            .then(|| Utc::now() + chrono::Duration::days(i64::from(req.valid_days)));
        let id = RegistrationLinkId::new();
        store::links::insert(
            &self.pool,
            &NewLink {
                id,
                org_id: caller.org_id,
                token_hash: &secret.hash,
                allowed_domains: &domains,
                requires_approval: req.requires_approval,
                department_id,
                names: &names,
                created_by: caller.user_id,
                expires_at: expires,
                max_uses: req.max_uses,
            },
        )
        .await?;
        let row = self.link(caller.org_id, id).await?;
        Ok((row, self.join_link(&secret.secret)))
    }

    async fn link(&self, org_id: OrgId, id: RegistrationLinkId) -> Result<LinkRow> {
        store::links::get(&self.pool, org_id, id)
            .await?
            .ok_or_else(|| {
                InvitationError::NotFound(format!(
                    "registration link `{id}` was not found in your organisation"
                ))
            })
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_links(
        &self,
        caller: &Caller,
        req: pb::ListRegistrationLinksRequest,
    ) -> Result<(Vec<LinkRow>, String)> {
        self.require(caller, Permission::OrgRegisterUsers).await?;
        let limit = aip::page_size(req.page_size, 50, 500)?;
        let query_key = "registration-links";
        let after: Option<(chrono::DateTime<Utc>, RegistrationLinkId)> =
            aip::decode_page_token(query_key, &req.page_token)?;
        let after = after.unwrap_or((
            chrono::DateTime::<Utc>::MAX_UTC,
            RegistrationLinkId::from_uuid(Uuid::max()),
        ));
        let mut rows = store::links::page(&self.pool, caller.org_id, after, limit + 1).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|l| aip::encode_page_token(query_key, &(l.created_at, l.id)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    #[tracing::instrument(skip_all)]
    pub async fn disable_link(&self, caller: &Caller, id: RegistrationLinkId) -> Result<LinkRow> {
        self.require(caller, Permission::OrgRegisterUsers).await?;
        let link = self.link(caller.org_id, id).await?;
        store::links::disable(&self.pool, link.id).await?;
        self.link(caller.org_id, id).await
    }

    /// What the join page shows of a link (no token: the link's secret is the credential). An
    /// unknown, disabled, expired or used-up link, or one whose department was deleted, is the
    /// same NOT_FOUND, naming nobody.
    #[tracing::instrument(skip_all)]
    pub async fn preview_link(&self, secret: &str) -> Result<pb::RegistrationLinkPreview> {
        if !token::well_formed(secret) {
            return Err(unknown_link());
        }
        let hash = token::hash(secret);
        let Some((stored, link_id, org_id)) =
            store::links::usable_by_token(&self.pool, &hash).await?
        else {
            return Err(unknown_link());
        };
        if !token::same(&stored, &hash) {
            return Err(unknown_link());
        }
        let link = store::links::get(&self.pool, org_id, link_id)
            .await?
            .ok_or_else(unknown_link)?;
        if link.used_up() {
            return Err(unknown_link());
        }
        if let Some(department) = link.department_id {
            self.require_department(org_id, department).await?;
        }
        Ok(pb::RegistrationLinkPreview {
            organization_name: link.organization_name,
            allowed_domains: link.allowed_domains,
            requires_approval: link.requires_approval,
        })
    }

    /// The link's department still exists at identity (asked as `register_with_link` asks:
    /// `AdmitInvitees`, check only, here with nobody); a deleted one is [`unknown_link`].
    async fn require_department(&self, org_id: OrgId, department: DepartmentId) -> Result<()> {
        let answer = self
            .identity
            .call(
                ipb::AdmitInviteesRequest {
                    org_id: org_id.to_string(),
                    department_id: department.to_string(),
                    invitees: Vec::new(),
                    check_only: true,
                },
                |mut raw, request| async move { raw.admit_invitees(request).await },
            )
            .await
            .map_err(InvitationError::from);
        match answer {
            Ok(_) => Ok(()),
            Err(InvitationError::NotFound(_)) => Err(unknown_link()),
            Err(other) => Err(other),
        }
    }

    /// A person joins through a link (no token: the link's secret is the credential). Nothing
    /// is made at identity and no seat is taken: both wait for the address's owner to use the
    /// link mailed to it ([`Invitations::accept`]), after an admin's approval where the link
    /// asks for one.
    #[tracing::instrument(skip_all, fields(network = %network))]
    pub async fn register_with_link(
        &self,
        network: &ClientNetwork,
        req: pb::RegisterWithLinkRequest,
    ) -> Result<pb::RegisterWithLinkResponse> {
        // Counted before anything is looked up, so a flood of junk tokens is bounded too.
        self.spend_registration(RegistrationLimit::PerNetwork, network.as_str())
            .await?;
        if !token::well_formed(&req.link_token) {
            return Err(unknown_link());
        }
        let hash = token::hash(&req.link_token);
        let found = store::links::usable_by_token(&self.pool, &hash).await?;
        let Some((stored, link_id, org_id)) = found else {
            return Err(unknown_link());
        };
        if !token::same(&stored, &hash) {
            return Err(unknown_link());
        }
        let link = self.link(org_id, link_id).await?;
        if link.used_up() {
            return Err(used_up());
        }
        let email = EmailAddress::parse("email", &req.email)?;
        self.require_mailable(&email)?;
        let first = domain::one_line("first_name", &req.first_name, domain::NAME_MAX)?;
        let last = domain::one_line("last_name", &req.last_name, domain::NAME_MAX)?;
        if first.is_empty() {
            return Err(InvitationError::InvalidArgument(
                "`first_name` is required".into(),
            ));
        }
        let locale = Locale::parse(&req.locale)?;
        if !link.allowed_domains.is_empty()
            && !link.allowed_domains.iter().any(|d| d == email.domain())
        {
            return Err(InvitationError::InvalidArgument(format!(
                "this link accepts addresses at {} only",
                link.allowed_domains.join(", ")
            )));
        }
        // The link's budget is spent only by registrations it would take, and first the
        // share of this network, so one network cannot use up the whole link.
        let link_key = link.id.to_string();
        self.spend_registration(
            RegistrationLimit::PerLinkNetwork,
            &format!("{link_key}|{network}"),
        )
        .await?;
        self.spend_registration(RegistrationLimit::PerLink, &link_key)
            .await?;
        let invitee = Invitee {
            input: req.email.clone(),
            email,
            first_name: first,
            last_name: last,
            position: String::new(),
        };

        // Identity only answers whether the address is free, and the seats: nothing is made.
        // No seat, no registration — said alike for every address, from identity's counts
        // alone (the confirmation takes the seat under its lock; this only refuses early).
        let user_id = UserId::new();
        let answer = self
            .identity
            .call(
                ipb::AdmitInviteesRequest {
                    org_id: org_id.to_string(),
                    department_id: link
                        .department_id
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    invitees: vec![ipb::Invitee {
                        user_id: user_id.to_string(),
                        email: invitee.email.to_string(),
                        first_name: invitee.first_name.clone(),
                        last_name: invitee.last_name.clone(),
                        position: String::new(),
                    }],
                    check_only: true,
                },
                |mut raw, request| async move { raw.admit_invitees(request).await },
            )
            .await
            .map_err(InvitationError::from);
        let answer = match answer {
            Ok(answer) => answer,
            Err(InvitationError::NotFound(_)) => return Err(department_gone()),
            Err(other) => return Err(other),
        };
        if !Seats::new(answer.seat_limit, i64::from(answer.seats_used)).fit(1) {
            return Err(no_free_seats());
        }
        let free = answer.admissions.first().is_some_and(|a| a.admitted);
        self.request_confirmation(&link, &invitee, locale, free, user_id)
            .await?;
        Ok(pb::RegisterWithLinkResponse {
            awaiting_approval: link.requires_approval,
            message: if link.requires_approval {
                AWAIT_APPROVAL
            } else {
                CHECK_YOUR_MAIL
            }
            .into(),
        })
    }

    /// What a registration does, which its answer never shows: an address that cannot join
    /// (`free` false: a user or an invitation holds it) gets nothing; one with an open
    /// registration through this link is mailed again (at most once per
    /// `registration_resend_interval_secs`); any other gets its registration, holding no seat.
    async fn request_confirmation(
        &self,
        link: &LinkRow,
        invitee: &Invitee,
        locale: Locale,
        free: bool,
        user_id: UserId,
    ) -> Result<()> {
        let open =
            store::registrations::open_of(&self.pool, link.id, invitee.email.as_str()).await?;
        if let Some(open) = open {
            if !free {
                // Taken since it registered: its confirmation would be refused.
                return Ok(());
            }
            let interval = self.config.registration_resend_interval_secs as f64;
            let expires = Utc::now() + self.mailed_ttl(&open);
            let again =
                store::registrations::request_again(&self.pool, open.id, interval, expires).await?;
            if again.is_some() {
                self.queued.notify_one();
            }
            tracing::info!(invitation = %open.id, mailed_again = again.is_some(), "an address registered through a link again");
            return Ok(());
        }
        if !free {
            tracing::info!(link = %link.id, "a link registration named an address that cannot join");
            return Ok(());
        }
        let (target, open_for) = if link.requires_approval {
            // Nobody is mailed until an admin approves; the admin has the invitation's time.
            (State::AwaitingApproval, self.ttl())
        } else {
            (State::Pending, self.registration_ttl())
        };
        let mut tx = self.pool.begin().await?;
        let row = store::registrations::insert(
            &mut tx,
            &NewRegistration {
                id: InvitationId::new(),
                user_id,
                link,
                invitee,
                locale,
                target,
                expires_at: Utc::now() + open_for,
            },
        )
        .await?;
        // None: a concurrent registration of the same address through this link won.
        let Some(row) = row else {
            return Ok(());
        };
        let change = match target {
            State::AwaitingApproval => Change::RegistrationRequested,
            _ => Change::Created,
        };
        publish(&mut tx, &row, &EventActor::System, change).await?;
        tx.commit().await?;
        if target == State::Pending {
            self.queued.notify_one();
        }
        Ok(())
    }
}
