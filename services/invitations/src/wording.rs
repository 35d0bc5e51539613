//! The words of invitation mail as an organisation has them: its own wording of the
//! invitation or the shipped one ([`Invitations::template`], read by the sender and for the
//! inviter's own mail client), GetInvitationTemplate and UpdateInvitationTemplate, and the
//! message an inviter sends from their own mail client.

use chrono::Utc;
use mailroom_platform::proto::invitations::v1 as pb;
use mailroom_types::{OrgId, Permission};

use crate::admission::Admitted;
use crate::domain::{Batch, Locale};
use crate::error::Result;
use crate::service::{Caller, Invitations};
use crate::store;
use crate::templates::{self, Fill, Purpose, Template};

impl Invitations {
    /// The organisation's wording for `purpose` in `locale`, or the shipped one.
    pub async fn template(
        &self,
        org_id: OrgId,
        purpose: Purpose,
        locale: Locale,
    ) -> Result<Template> {
        if purpose == Purpose::Invitation {
            if let Some(custom) = store::templates::custom(&self.pool, org_id, locale).await? {
                return Ok(custom);
            }
        }
        Ok(templates::shipped(purpose, locale))
    }

    /// What an inviter sends from their own mail client: the subject, the body with `{link}`
    /// left for each invitee's link, and one `mailto:` per invitee with it filled in.
    pub async fn compose(&self, batch: &Batch, admitted: &Admitted) -> Result<pb::ComposedMessage> {
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

    #[tracing::instrument(skip_all)]
    pub async fn get_template(
        &self,
        caller: &Caller,
        locale: &str,
    ) -> Result<pb::InvitationTemplate> {
        let locale = Locale::parse(locale)?;
        let template = self
            .template(caller.org_id, Purpose::Invitation, locale)
            .await?;
        let customized = template != templates::shipped(Purpose::Invitation, locale);
        Ok(pb::InvitationTemplate {
            locale: locale.code().into(),
            subject: template.subject,
            body: template.body,
            customized,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_template(
        &self,
        caller: &Caller,
        req: pb::UpdateInvitationTemplateRequest,
    ) -> Result<pb::InvitationTemplate> {
        let locale = Locale::parse(&req.locale)?;
        self.require(caller, Permission::OrgRegisterUsers).await?;
        if req.reset {
            store::templates::reset(&self.pool, caller.org_id, locale).await?;
        } else {
            let template = templates::parse_custom(&req.subject, &req.body)?;
            store::templates::save(&self.pool, caller.org_id, locale, &template).await?;
        }
        self.get_template(caller, locale.code()).await
    }
}
