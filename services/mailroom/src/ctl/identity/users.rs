//! `mailroom ctl users …`: the people of the organisation — list, create, edit, dismiss and
//! rehire, admin rights, password resets, signing out, the chain of command — how a user
//! prints, and finding a user by address for the other commands.

use anyhow::Context;
use clap::Subcommand;
use mailroom_platform::proto::identity::v1 as pb;
use serde_json::{json, Value};

use super::mask;
use crate::ctl::{Answer, Clients, Paging};
use crate::output::{short_name, Rows};

#[derive(Subcommand)]
pub enum UsersCommand {
    List {
        /// e.g. 'state = INVITED AND name : "lee"'
        #[arg(long, default_value = "")]
        filter: String,
        #[command(flatten)]
        paging: Paging,
    },
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        login_email: String,
        #[arg(long, default_value = "")]
        contact_email: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        #[arg(long, default_value = "")]
        position: String,
        #[arg(long, default_value = "")]
        department: String,
        #[arg(long)]
        admin: bool,
        /// Without it the user is INVITED.
        #[arg(long, env = "MAILROOM_NEW_USER_PASSWORD", hide_env_values = true)]
        user_password: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        #[arg(long)]
        position: Option<String>,
        #[arg(long)]
        department: Option<String>,
        #[arg(long)]
        contact_email: Option<String>,
    },
    Dismiss {
        id: String,
    },
    Rehire {
        id: String,
    },
    /// Give (`true`) or take (`false`) the user's admin rights.
    SetAdmin {
        id: String,
        #[arg(action = clap::ArgAction::Set, value_name = "true|false")]
        admin: bool,
    },
    /// Mail the user a one-time link to choose a new password (you never see it).
    SendPasswordReset {
        id: String,
    },
    /// End every session of the user (or yours, without an id), on every service.
    SignOut {
        id: Option<String>,
    },
    Subordinates {
        id: String,
    },
    Supervisors {
        id: String,
    },
}

pub(super) const USER_COLUMNS: [&str; 8] = [
    "id",
    "state",
    "login_email",
    "contact_email",
    "name",
    "position",
    "department_id",
    "admin",
];

pub(super) fn user_row(u: &pb::User) -> Vec<Value> {
    vec![
        json!(u.id),
        json!(user_state(u.state)),
        json!(u.login_email),
        json!(u.contact_email),
        json!(format!("{} {}", u.first_name, u.last_name).trim()),
        json!(u.position),
        json!(u.department_id),
        json!(u.admin),
    ]
}

pub(super) fn user_state(state: i32) -> String {
    short_name(
        pb::UserState::try_from(state).ok().map(|s| s.as_str_name()),
        "USER_STATE_",
    )
}

fn users_rows(list: &[pb::User], next: String, total: i32) -> Rows {
    let mut rows = Rows::new("users", USER_COLUMNS.to_vec());
    rows.rows = list.iter().map(user_row).collect();
    rows.footer = vec![
        ("total_size", json!(total)),
        ("next_page_token", json!(next)),
    ];
    rows
}

pub(super) fn one_user(u: &pb::User) -> Rows {
    Rows::one(USER_COLUMNS.to_vec(), user_row(u))
}

pub(crate) async fn run(c: &mut Clients, cmd: UsersCommand) -> anyhow::Result<Rows> {
    Ok(match cmd {
        UsersCommand::List { filter, paging } => {
            let request = c.request(pb::ListUsersRequest {
                page_size: paging.page_size,
                page_token: paging.page_token,
                filter,
                order_by: paging.order_by,
            });
            let r = c.identity.list_users(request).await.answer()?;
            users_rows(&r.users, r.next_page_token, r.total_size)
        }
        UsersCommand::Get { id } => {
            let request = c.request(pb::GetUserRequest { id });
            one_user(&c.identity.get_user(request).await.answer()?)
        }
        UsersCommand::Create {
            login_email,
            contact_email,
            first_name,
            last_name,
            position,
            department,
            admin,
            user_password,
        } => {
            let request = c.request(pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email,
                    contact_email,
                    first_name,
                    last_name,
                    position,
                    department_id: department,
                    admin,
                    ..Default::default()
                }),
                password: user_password.unwrap_or_default(),
            });
            one_user(&c.identity.create_user(request).await.answer()?)
        }
        UsersCommand::Update {
            id,
            first_name,
            last_name,
            position,
            department,
            contact_email,
        } => {
            let update_mask = mask(&[
                ("first_name", first_name.is_some()),
                ("last_name", last_name.is_some()),
                ("position", position.is_some()),
                ("department_id", department.is_some()),
                ("contact_email", contact_email.is_some()),
            ]);
            let request = c.request(pb::UpdateUserRequest {
                user: Some(pb::User {
                    id,
                    first_name: first_name.unwrap_or_default(),
                    last_name: last_name.unwrap_or_default(),
                    position: position.unwrap_or_default(),
                    department_id: department.unwrap_or_default(),
                    contact_email: contact_email.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask,
            });
            one_user(&c.identity.update_user(request).await.answer()?)
        }
        UsersCommand::Dismiss { id } => {
            let request = c.request(pb::DismissUserRequest { id });
            one_user(&c.identity.dismiss_user(request).await.answer()?)
        }
        UsersCommand::SendPasswordReset { id } => {
            let request = c.request(pb::SendPasswordResetLinkRequest {
                user_id: id.clone(),
            });
            c.identity
                .send_password_reset_link(request)
                .await
                .answer()?;
            Rows::one(vec!["reset_link_sent_to"], vec![json!(id)])
        }
        UsersCommand::SignOut { id } => {
            let user_id = id.unwrap_or_default();
            let request = c.request(pb::SignOutEverywhereRequest {
                user_id: user_id.clone(),
            });
            c.auth.sign_out_everywhere(request).await.answer()?;
            Rows::one(
                vec!["signed_out"],
                vec![json!(if user_id.is_empty() {
                    "you".to_owned()
                } else {
                    user_id
                })],
            )
        }
        UsersCommand::Rehire { id } => {
            let request = c.request(pb::RehireUserRequest { id });
            one_user(&c.identity.rehire_user(request).await.answer()?)
        }
        UsersCommand::SetAdmin { id, admin } => {
            let request = c.request(pb::SetAdminRequest { id, admin });
            one_user(&c.identity.set_admin(request).await.answer()?)
        }
        UsersCommand::Subordinates { id } => {
            let request = c.request(pb::ListSubordinatesRequest {
                user_id: id,
                page_size: 1000,
                page_token: String::new(),
            });
            let r = c.identity.list_subordinates(request).await.answer()?;
            users_rows(&r.users, r.next_page_token, r.total_size)
        }
        UsersCommand::Supervisors { id } => {
            let request = c.request(pb::ListSupervisorsRequest { user_id: id });
            let r = c.identity.list_supervisors(request).await.answer()?;
            let mut rows = Rows::new("users", USER_COLUMNS.to_vec());
            rows.rows = r.supervisors.iter().map(user_row).collect();
            rows
        }
    })
}

/// A user id, or the id of the user holding an address (login or contact).
pub(crate) async fn resolve_user(c: &mut Clients, user: &str) -> anyhow::Result<String> {
    if !user.contains('@') {
        return Ok(user.to_owned());
    }
    let wanted = user.trim().to_lowercase();
    let request = c.request(pb::ListUsersRequest {
        filter: format!("email : {:?}", wanted),
        page_size: 50,
        ..Default::default()
    });
    let list = c.identity.list_users(request).await.answer()?;
    list.users
        .iter()
        .find(|u| u.login_email == wanted || u.contact_email == wanted)
        .map(|u| u.id.clone())
        .with_context(|| format!("no user in your organisation holds {wanted}"))
}
