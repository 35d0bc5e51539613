//! Quick-registration links: an admin makes one (optionally for some email domains only,
//! optionally needing approval) and shares it; whoever opens it gives their address and name
//! and is mailed a personal link that confirms the address — after an admin approves, when the
//! link asks for that. The address confirmation is what keeps a link holder from claiming
//! someone else's address.
//!
//! Registering answers the same whether or not the address could join (taken, already invited),
//! so a link cannot be used to learn who works at the organisation.

use chrono::Utc;
use mailroom_aip as aip;
use mailroom_platform::outbox::EventActor;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_platform::types::Seats;
use mailroom_types::{DepartmentId, OrgId, Permission, RegistrationLinkId};
use uuid::Uuid;

use crate::domain::{self, Batch, Delivery, EmailAddress, Invitee, Kind, Locale, Names, State};
use crate::error::{InvitationError, Result};
use crate::service::{Caller, Invitations};
use crate::store::links::NewLink;
use crate::store::{self, LinkRow};
use crate::token;

fn unknown_link() -> InvitationError {
    InvitationError::NotFound(
        "this registration link is not valid: it may be mistyped, disabled or expired; ask the organisation for a new one".into(),
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

    /// A person joins through a link (no token: the link's secret is the credential).
    #[tracing::instrument(skip_all)]
    pub async fn register_with_link(
        &self,
        req: pb::RegisterWithLinkRequest,
    ) -> Result<pb::RegisterWithLinkResponse> {
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
        if let Some(limits) = &self.limits {
            self.spend(
                &limits.per_link,
                &link.id.to_string(),
                1,
                "per registration link and hour",
            )
            .await?;
        }
        let email = EmailAddress::parse("email", &req.email)?;
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
        // No seat, no registration — said alike for every address. Identity's seat rule,
        // under its lock, refuses only an address it would admit (a taken or already invited
        // one takes no seat), so its refusal alone would tell who is already here: the same
        // rule is asked first of identity's counts, whatever the address. Identity still
        // decides under its lock; this only refuses early.
        let org = self.identity.organization(org_id).await?;
        if !Seats::new(org.seat_limit, i64::from(org.seats_used)).fit(1) {
            return Err(no_free_seats());
        }
        let target = if link.requires_approval {
            State::AwaitingApproval
        } else {
            State::Pending
        };
        let batch = Batch {
            org_id,
            inviter: link.created_by_user_id,
            kind: Kind::RegistrationLink,
            delivery: Delivery::SystemMail,
            target,
            department_id: link.department_id,
            link_id: Some(link.id),
            message: String::new(),
            locale,
            names: Names {
                organization: link.organization_name.clone(),
                inviter: link.created_by_name.clone(),
                department: link.department_name.clone(),
            },
            actor: EventActor::System,
        };
        let invitee = Invitee {
            input: req.email.clone(),
            email,
            first_name: first,
            last_name: last,
            position: String::new(),
        };
        match self.admit(&batch, vec![invitee]).await {
            Ok(admitted) => {
                if admitted.invitations.is_empty() {
                    tracing::info!(link = %link.id, "a link registration named an address that cannot join");
                }
            }
            Err(InvitationError::Seats(_)) => return Err(no_free_seats()),
            Err(other) => return Err(other),
        }
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
}
