//! Inviting by email (a pasted list, sent by Mailroom or composed for the inviter's own mail
//! client) and registering a person directly: the requests parsed and checked, the names read
//! at identity, then one [`admission`](crate::admission) for the whole call.

use mailroom_platform::proto::identity::v1 as ipb;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::{DepartmentId, Permission};

use crate::admission::{Admitted, Rejected};
use crate::domain::{
    self, Batch, Delivery, EmailAddress, Entry, Invitee, Kind, Locale, Names, State,
};
use crate::error::{InvitationError, Result};
use crate::service::{Caller, Invitations};
use crate::store::InvitationRow;

fn display_name(u: &ipb::User) -> String {
    let name = format!("{} {}", u.first_name, u.last_name);
    let name = name.trim();
    if name.is_empty() {
        u.login_email.clone()
    } else {
        name.to_owned()
    }
}

impl Invitations {
    /// Whether Mailroom's mail can reach `address`: one needing SMTPUTF8 only when the
    /// operator says the relay offers it.
    pub fn mailable(&self, address: &EmailAddress) -> bool {
        self.config.smtputf8_addresses || !domain::needs_smtputf8(address)
    }

    /// Refuses an address Mailroom's mail cannot reach (a registration is always mailed).
    pub fn require_mailable(&self, address: &EmailAddress) -> Result<()> {
        if self.mailable(address) {
            return Ok(());
        }
        Err(InvitationError::InvalidArgument(
            domain::undeliverable_local_part(address),
        ))
    }

    /// The organisation's, the caller's and the department's names, read at identity.
    pub async fn names(&self, caller: &Caller, department: Option<DepartmentId>) -> Result<Names> {
        // The caller's own profile is read with their token, so identity scopes it as usual.
        let as_caller = self.identity.as_person(caller.bearer.clone());
        let (org, me, dep) = tokio::join!(
            self.identity.organization(caller.org_id),
            as_caller.user(caller.user_id),
            async {
                match department {
                    Some(d) => as_caller
                        .department(d)
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

    /// CreateInvitations: every address of the pasted list invited or reported, and for the
    /// inviter's own mail client the message to send.
    #[tracing::instrument(skip_all)]
    pub async fn create_invitations(
        &self,
        caller: &Caller,
        req: pb::CreateInvitationsRequest,
    ) -> Result<(Admitted, Option<pb::ComposedMessage>)> {
        let entries = domain::address_list(&req.emails)?;
        let message = domain::message(&req.message)?;
        let locale = Locale::parse(&req.locale)?;
        let department_id = DepartmentId::parse_optional("department_id", &req.department_id)?;
        let delivery = match pb::DeliveryMethod::try_from(req.delivery) {
            Ok(pb::DeliveryMethod::Unspecified | pb::DeliveryMethod::SystemMail) => {
                Delivery::SystemMail
            }
            Ok(pb::DeliveryMethod::OwnMailClient) => Delivery::OwnMailClient,
            Err(_) => {
                return Err(InvitationError::InvalidArgument(format!(
                    "`delivery` {} is not a delivery method; use DELIVERY_METHOD_SYSTEM_MAIL (1) or DELIVERY_METHOD_OWN_MAIL_CLIENT (2)",
                    req.delivery
                )))
            }
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
                // Mailroom's relay could not deliver it: refused now, not failed later.
                Entry::Address { input, address }
                    if delivery == Delivery::SystemMail && !self.mailable(&address) =>
                {
                    rejected.push(Rejected::in_list(
                        input,
                        pb::RejectionReason::Malformed,
                        domain::undeliverable_local_part(&address),
                    ))
                }
                Entry::Address { input, address } => {
                    invitees.push(Invitee::address(input, address))
                }
                Entry::Malformed { input, reason } => rejected.push(Rejected::in_list(
                    input,
                    pb::RejectionReason::Malformed,
                    reason,
                )),
                Entry::Duplicate { input, address } => rejected.push(Rejected::in_list(
                    input,
                    pb::RejectionReason::Duplicate,
                    format!("{address} is already earlier in this list"),
                )),
            }
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
        self.spend_invitations(caller, invitees.len() as u32)
            .await?;
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

    /// RegisterUser: an admin adds a person, who is mailed a link to set their password.
    #[tracing::instrument(skip_all)]
    pub async fn register_user(
        &self,
        caller: &Caller,
        req: pb::RegisterUserRequest,
    ) -> Result<InvitationRow> {
        let email = EmailAddress::parse("email", &req.email)?;
        self.require_mailable(&email)?;
        let first = domain::one_line("first_name", &req.first_name, domain::NAME_MAX)?;
        let last = domain::one_line("last_name", &req.last_name, domain::NAME_MAX)?;
        let position = domain::one_line("position", &req.position, 200)?;
        if first.is_empty() && last.is_empty() {
            return Err(InvitationError::InvalidArgument(
                "`first_name` or `last_name` is required to register a person".into(),
            ));
        }
        let locale = Locale::parse(&req.locale)?;
        let department_id = DepartmentId::parse_optional("department_id", &req.department_id)?;
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
        let invitee = Invitee {
            input: req.email.clone(),
            email,
            first_name: first,
            last_name: last,
            position,
        };
        let mut admitted = self.admit(&batch, vec![invitee]).await?;
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
