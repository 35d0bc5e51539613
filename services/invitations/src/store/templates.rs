//! The SQL of an organisation's own wording of the invitation mail (`invitation_templates`,
//! one per locale).

use mailroom_types::OrgId;
use sqlx::PgExecutor;

use crate::domain::Locale;
use crate::error::Result;
use crate::templates::Template;

/// The organisation's wording in `locale`, if it has its own.
pub async fn custom(
    conn: impl PgExecutor<'_>,
    org_id: OrgId,
    locale: Locale,
) -> Result<Option<Template>> {
    let custom: Option<(String, String)> = sqlx::query_as(
        "SELECT subject, body FROM invitation_templates WHERE org_id = $1 AND locale = $2",
    )
    .bind(org_id)
    .bind(locale.code())
    .fetch_optional(conn)
    .await?;
    Ok(custom.map(|(subject, body)| Template { subject, body }))
}

/// Back to the shipped wording.
pub async fn reset(conn: impl PgExecutor<'_>, org_id: OrgId, locale: Locale) -> Result<()> {
    sqlx::query("DELETE FROM invitation_templates WHERE org_id = $1 AND locale = $2")
        .bind(org_id)
        .bind(locale.code())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn save(
    conn: impl PgExecutor<'_>,
    org_id: OrgId,
    locale: Locale,
    template: &Template,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO invitation_templates (org_id, locale, subject, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id, locale) DO UPDATE SET subject = EXCLUDED.subject, body = EXCLUDED.body, updated_at = now()",
    )
    .bind(org_id)
    .bind(locale.code())
    .bind(&template.subject)
    .bind(&template.body)
    .execute(conn)
    .await?;
    Ok(())
}
