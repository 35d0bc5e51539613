//! `mailroom ctl org`, `users`, `departments`, `address`, `login-change` and `jwks`:
//! identity's commands. The people ([`users`]) have a module of their own, which also finds a
//! user by address for the other services' commands.

use anyhow::bail;
use clap::Subcommand;
use mailroom_platform::proto::identity::v1 as pb;
use serde_json::{json, Value};

use super::{Answer, Clients};
use crate::output::{short_name, time, Clock, Rows};

pub mod users;

use users::{one_user, user_row, user_state, USER_COLUMNS};

#[derive(Subcommand)]
pub enum OrgCommand {
    Get,
    /// Create an organisation and its first admin (the operator's credential needed:
    /// --client-id operator --client-secret …).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 0)]
        seat_limit: i32,
        #[arg(long)]
        admin_email: String,
        #[arg(long, env = "MAILROOM_NEW_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
        #[arg(long, default_value = "")]
        admin_first_name: String,
        #[arg(long, default_value = "")]
        admin_last_name: String,
    },
    Update {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        seat_limit: Option<i32>,
        #[arg(long)]
        allow_everyone_to_invite: Option<bool>,
    },
}

#[derive(Subcommand)]
pub enum DepartmentsCommand {
    List {
        #[arg(long, default_value = "")]
        filter: String,
    },
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        parent: String,
        #[arg(long, default_value = "")]
        head: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// "" moves it to the top level.
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        head: Option<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum AddressCommand {
    /// Every use of an address in your organisation.
    Usage { address: String },
    /// Move an address from a dismissed user to someone else, or free it.
    Transfer {
        address: String,
        #[arg(long)]
        from: String,
        #[arg(long, conflicts_with = "release")]
        to: Option<String>,
        #[arg(long)]
        release: bool,
        /// login or contact
        #[arg(long, default_value = "contact")]
        r#as: String,
    },
}

#[derive(Subcommand)]
pub enum LoginChangeCommand {
    Request { new_login_email: String },
    Confirm { code: String },
}

fn mask(paths: &[(&str, bool)]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths
            .iter()
            .filter(|(_, set)| *set)
            .map(|(p, _)| (*p).to_owned())
            .collect(),
    })
}

pub(super) async fn org(c: &mut Clients, cmd: OrgCommand) -> anyhow::Result<Rows> {
    let org = match cmd {
        OrgCommand::Get => {
            c.identity
                .get_organization(c.request(pb::GetOrganizationRequest::default()))
                .await
        }
        OrgCommand::Create {
            name,
            seat_limit,
            admin_email,
            admin_password,
            admin_first_name,
            admin_last_name,
        } => {
            let request = c.request(pb::CreateOrganizationRequest {
                display_name: name,
                seat_limit,
                settings: Some(pb::OrganizationSettings {
                    allow_everyone_to_invite: true,
                }),
                first_admin: Some(pb::NewAdmin {
                    login_email: admin_email,
                    first_name: admin_first_name,
                    last_name: admin_last_name,
                    password: admin_password,
                }),
            });
            c.identity.create_organization(request).await
        }
        OrgCommand::Update {
            name,
            seat_limit,
            allow_everyone_to_invite,
        } => {
            let request = c.request(pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    display_name: name.clone().unwrap_or_default(),
                    seat_limit: seat_limit.unwrap_or_default(),
                    settings: Some(pb::OrganizationSettings {
                        allow_everyone_to_invite: allow_everyone_to_invite.unwrap_or_default(),
                    }),
                    ..Default::default()
                }),
                update_mask: mask(&[
                    ("display_name", name.is_some()),
                    ("seat_limit", seat_limit.is_some()),
                    (
                        "settings.allow_everyone_to_invite",
                        allow_everyone_to_invite.is_some(),
                    ),
                ]),
            });
            c.identity.update_organization(request).await
        }
    }
    .answer()?;
    Ok(Rows::one(
        vec![
            "id",
            "display_name",
            "seat_limit",
            "allow_everyone_to_invite",
        ],
        vec![
            json!(org.id),
            json!(org.display_name),
            json!(org.seat_limit),
            json!(org
                .settings
                .map(|s| s.allow_everyone_to_invite)
                .unwrap_or_default()),
        ],
    ))
}

const DEPARTMENT_COLUMNS: [&str; 4] = ["id", "name", "parent_id", "head_user_id"];

fn department_row(d: &pb::Department) -> Vec<Value> {
    vec![
        json!(d.id),
        json!(d.name),
        json!(d.parent_id),
        json!(d.head_user_id),
    ]
}

pub(super) async fn departments(c: &mut Clients, cmd: DepartmentsCommand) -> anyhow::Result<Rows> {
    let one = |d: pb::Department| Rows::one(DEPARTMENT_COLUMNS.to_vec(), department_row(&d));
    Ok(match cmd {
        DepartmentsCommand::List { filter } => {
            let request = c.request(pb::ListDepartmentsRequest {
                page_size: 1000,
                page_token: String::new(),
                filter,
            });
            let r = c.identity.list_departments(request).await.answer()?;
            let mut rows = Rows::new("departments", DEPARTMENT_COLUMNS.to_vec());
            rows.rows = r.departments.iter().map(department_row).collect();
            rows.footer = vec![("next_page_token", json!(r.next_page_token))];
            rows
        }
        DepartmentsCommand::Create { name, parent, head } => {
            let request = c.request(pb::CreateDepartmentRequest {
                department: Some(pb::Department {
                    name,
                    parent_id: parent,
                    head_user_id: head,
                    ..Default::default()
                }),
            });
            one(c.identity.create_department(request).await.answer()?)
        }
        DepartmentsCommand::Update {
            id,
            name,
            parent,
            head,
        } => {
            let update_mask = mask(&[
                ("name", name.is_some()),
                ("parent_id", parent.is_some()),
                ("head_user_id", head.is_some()),
            ]);
            let request = c.request(pb::UpdateDepartmentRequest {
                department: Some(pb::Department {
                    id,
                    name: name.unwrap_or_default(),
                    parent_id: parent.unwrap_or_default(),
                    head_user_id: head.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask,
            });
            one(c.identity.update_department(request).await.answer()?)
        }
        DepartmentsCommand::Delete { id } => {
            let request = c.request(pb::DeleteDepartmentRequest { id: id.clone() });
            c.identity.delete_department(request).await.answer()?;
            Rows::one(vec!["deleted"], vec![json!(id)])
        }
    })
}

pub(super) async fn address(c: &mut Clients, cmd: AddressCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        AddressCommand::Usage { address } => {
            let request = c.request(pb::GetEmailAddressUsageRequest { address });
            let r = c.identity.get_email_address_usage(request).await.answer()?;
            let mut rows = Rows::new(
                "address_uses",
                vec!["address", "use", "user_id", "user", "user_state"],
            );
            rows.rows = r
                .uses
                .iter()
                .map(|u| {
                    let kind = short_name(
                        pb::AddressUseKind::try_from(u.kind)
                            .ok()
                            .map(|k| k.as_str_name()),
                        "ADDRESS_USE_KIND_",
                    );
                    vec![
                        json!(r.address),
                        json!(kind),
                        json!(u.user_id),
                        json!(u.user_display_name),
                        json!(user_state(u.user_state)),
                    ]
                })
                .collect();
            rows
        }
        AddressCommand::Transfer {
            address,
            from,
            to,
            release,
            r#as,
        } => {
            let destination = match (to, release) {
                (Some(to), false) => pb::transfer_email_address_request::Destination::ToUserId(to),
                (None, true) => pb::transfer_email_address_request::Destination::Release(true),
                _ => bail!("give --to USER_ID or --release"),
            };
            let as_kind = match r#as.as_str() {
                "login" => pb::AddressUseKind::Login,
                "contact" => pb::AddressUseKind::Contact,
                other => bail!("--as is login or contact, not `{other}`"),
            };
            let request = c.request(pb::TransferEmailAddressRequest {
                address,
                from_user_id: from,
                destination: Some(destination),
                as_kind: as_kind as i32,
            });
            let r = c.identity.transfer_email_address(request).await.answer()?;
            let mut rows = Rows::new("users", USER_COLUMNS.to_vec());
            rows.rows = r
                .from_user
                .iter()
                .chain(r.to_user.iter())
                .map(user_row)
                .collect();
            rows
        }
    })
}

pub(super) async fn login_change(c: &mut Clients, cmd: LoginChangeCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        LoginChangeCommand::Request { new_login_email } => {
            let r = c
                .identity
                .request_login_email_change(
                    c.request(pb::RequestLoginEmailChangeRequest { new_login_email }),
                )
                .await
                .answer()?;
            // An answer without one prints the epoch, as it always has.
            let at = time(Some(&r.expire_time.unwrap_or_default()), Clock::Rfc3339);
            Rows::one(vec!["code_sent", "expires"], vec![json!(true), json!(at)])
        }
        LoginChangeCommand::Confirm { code } => {
            let request = c.request(pb::ConfirmLoginEmailChangeRequest { code });
            one_user(
                &c.identity
                    .confirm_login_email_change(request)
                    .await
                    .answer()?,
            )
        }
    })
}

/// The keys that verify access tokens, as identity publishes them (a public method).
pub(super) async fn jwks(c: &mut Clients) -> anyhow::Result<String> {
    Ok(c.auth
        .get_jwks(pb::GetJwksRequest {})
        .await?
        .into_inner()
        .json)
}

/// The id of the caller's own organisation.
pub(crate) async fn own_org_id(c: &mut Clients) -> anyhow::Result<String> {
    let request = c.request(pb::GetOrganizationRequest::default());
    let org = c.identity.get_organization(request).await.answer()?;
    Ok(org.id)
}
