//! `mailroom ctl invite`, `ctl invitations …`, `ctl register` and `ctl links …`: the
//! invitations service's commands.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use mailroom_platform::proto::invitations::v1 as ipb;
use serde_json::json;

use super::{Answer, Clients, Paging};
use crate::output::{short_name, time, Clock, Rows};

#[derive(Args)]
#[command(
    after_help = "Who may invite: org admins, people whose role may invite (`mailroom ctl access roles`), and everyone while the organisation allows it (`mailroom ctl org update --allow-everyone-to-invite true`)."
)]
pub struct InviteArgs {
    /// Addresses separated by spaces, commas or newlines.
    #[arg(default_value = "")]
    emails: String,
    /// Read the addresses from this file ("-" for standard input) instead.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    #[arg(long, default_value = "")]
    department: String,
    /// Your words, put into the mail as plain text.
    #[arg(long, default_value = "")]
    message: String,
    /// en or ru.
    #[arg(long, default_value = "en")]
    locale: String,
    /// Mailroom sends the mail, or prints it for you to send from your own mail client.
    #[arg(long, value_enum, default_value_t = Via::System)]
    via: Via,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Via {
    System,
    OwnClient,
}

#[derive(Args)]
pub struct RegisterArgs {
    #[arg(long)]
    email: String,
    #[arg(long, default_value = "")]
    first_name: String,
    #[arg(long, default_value = "")]
    last_name: String,
    #[arg(long, default_value = "")]
    position: String,
    #[arg(long, default_value = "")]
    department: String,
    #[arg(long, default_value = "en")]
    locale: String,
}

#[derive(Subcommand)]
pub enum InvitationsCommand {
    List {
        /// e.g. 'state = PENDING AND email : "acme"'
        #[arg(long, default_value = "")]
        filter: String,
        #[command(flatten)]
        paging: Paging,
    },
    Get {
        id: String,
    },
    Resend {
        id: String,
    },
    Revoke {
        id: String,
    },
    Delete {
        id: String,
    },
    Approve {
        id: String,
    },
    Reject {
        id: String,
    },
    /// Accept an invitation (as the invitee: no sign-in needed).
    Accept {
        /// The link from the mail, or just its token.
        #[arg(long)]
        link: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        #[arg(long, env = "MAILROOM_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
    /// Seats: the plan's limit, active users, pending invitations, seats left.
    Seats,
    /// The organisation's invitation mail in a language.
    Template {
        #[arg(long, default_value = "en")]
        locale: String,
        /// Replace the subject (with --body).
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        body: Option<String>,
        /// Go back to the shipped text.
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Subcommand)]
pub enum LinksCommand {
    Create {
        /// Allowed email domains (repeat or comma-separate); none means any.
        #[arg(long, value_delimiter = ',')]
        domain: Vec<String>,
        #[arg(long)]
        requires_approval: bool,
        #[arg(long, default_value = "")]
        department: String,
        /// 0: until disabled.
        #[arg(long, default_value_t = 0)]
        valid_days: i32,
        /// People who may join through it (registrations confirmed); none: no limit.
        #[arg(long)]
        max_uses: Option<i32>,
    },
    List,
    Disable {
        id: String,
    },
    /// Join through a link (as the newcomer: no sign-in needed).
    Join {
        #[arg(long)]
        link: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
    },
}

/// The token part of a link (`…?token=X`, `…?link=X`) or the token itself.
fn token_of(link: &str) -> String {
    link.rsplit_once('=')
        .map(|(_, t)| t)
        .unwrap_or(link)
        .trim()
        .to_owned()
}

const COLUMNS: [&str; 9] = [
    "id", "email", "state", "kind", "delivery", "sent", "expires", "inviter", "failure",
];

fn row(i: &ipb::Invitation) -> Vec<serde_json::Value> {
    vec![
        json!(i.id),
        json!(i.email),
        json!(short_name(
            ipb::InvitationState::try_from(i.state)
                .ok()
                .map(|v| v.as_str_name()),
            "INVITATION_STATE_",
        )),
        json!(short_name(
            ipb::InvitationKind::try_from(i.kind)
                .ok()
                .map(|v| v.as_str_name()),
            "INVITATION_KIND_",
        )),
        json!(short_name(
            ipb::DeliveryState::try_from(i.delivery_state)
                .ok()
                .map(|v| v.as_str_name()),
            "DELIVERY_STATE_",
        )),
        json!(i.send_count),
        json!(time(i.expire_time.as_ref(), Clock::Minutes)),
        json!(i.inviter_user_id),
        json!(i.failure_reason),
    ]
}

fn one(i: &ipb::Invitation) -> Rows {
    Rows::one(COLUMNS.to_vec(), row(i))
}

pub(crate) async fn invite(c: &mut Clients, args: InviteArgs) -> anyhow::Result<Rows> {
    let emails = match &args.file {
        Some(path) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => args.emails.clone(),
    };
    let request = c.request(ipb::CreateInvitationsRequest {
        emails,
        department_id: args.department,
        message: args.message,
        delivery: match args.via {
            Via::System => ipb::DeliveryMethod::SystemMail,
            Via::OwnClient => ipb::DeliveryMethod::OwnMailClient,
        } as i32,
        locale: args.locale,
    });
    let answer = c.invitations.create_invitations(request).await.answer()?;
    let mut rows = Rows::new(
        "invite_results",
        vec!["address", "outcome", "invitation", "reason"],
    );
    for i in &answer.invitations {
        rows.rows.push(vec![
            json!(i.email),
            json!("invited"),
            json!(i.id),
            json!(""),
        ]);
    }
    for r in &answer.rejected {
        rows.rows.push(vec![
            json!(r.input),
            json!(short_name(
                ipb::RejectionReason::try_from(r.code)
                    .ok()
                    .map(|v| v.as_str_name()),
                "REJECTION_REASON_",
            )),
            json!(r.user_id),
            json!(r.reason),
        ]);
    }
    if let Some(composed) = answer.composed {
        rows.footer.push(("subject", json!(composed.subject)));
        rows.footer
            .push(("mailto_links", json!(composed.mailto_links)));
        rows.footer
            .push(("invitation_links", json!(composed.invitation_links)));
    }
    Ok(rows)
}

pub(crate) async fn register(c: &mut Clients, args: RegisterArgs) -> anyhow::Result<Rows> {
    let request = c.request(ipb::RegisterUserRequest {
        email: args.email,
        first_name: args.first_name,
        last_name: args.last_name,
        position: args.position,
        department_id: args.department,
        locale: args.locale,
    });
    let i = c.invitations.register_user(request).await.answer()?;
    Ok(one(&i))
}

pub(crate) async fn run(c: &mut Clients, cmd: InvitationsCommand) -> anyhow::Result<Rows> {
    let inv =
        |r: Result<tonic::Response<ipb::Invitation>, tonic::Status>| r.answer().map(|i| one(&i));
    match cmd {
        InvitationsCommand::List { filter, paging } => {
            let request = c.request(ipb::ListInvitationsRequest {
                page_size: paging.page_size,
                page_token: paging.page_token,
                filter,
                order_by: paging.order_by,
            });
            let page = c.invitations.list_invitations(request).await.answer()?;
            let mut rows = Rows::new("invitations", COLUMNS.to_vec());
            rows.rows = page.invitations.iter().map(row).collect();
            rows.footer.push(("total_size", json!(page.total_size)));
            if !page.next_page_token.is_empty() {
                rows.footer
                    .push(("next_page_token", json!(page.next_page_token)));
            }
            Ok(rows)
        }
        InvitationsCommand::Get { id } => {
            let request = c.request(ipb::GetInvitationRequest { id });
            inv(c.invitations.get_invitation(request).await)
        }
        InvitationsCommand::Resend { id } => {
            let request = c.request(ipb::ResendInvitationRequest { id });
            inv(c.invitations.resend_invitation(request).await)
        }
        InvitationsCommand::Revoke { id } => {
            let request = c.request(ipb::RevokeInvitationRequest { id });
            inv(c.invitations.revoke_invitation(request).await)
        }
        InvitationsCommand::Approve { id } => {
            let request = c.request(ipb::ApproveRegistrationRequest { invitation_id: id });
            inv(c.invitations.approve_registration(request).await)
        }
        InvitationsCommand::Reject { id } => {
            let request = c.request(ipb::RejectRegistrationRequest { invitation_id: id });
            inv(c.invitations.reject_registration(request).await)
        }
        InvitationsCommand::Delete { id } => {
            let request = c.request(ipb::DeleteInvitationRequest { id: id.clone() });
            c.invitations.delete_invitation(request).await.answer()?;
            Ok(Rows::one(vec!["deleted"], vec![json!(id)]))
        }
        InvitationsCommand::Accept {
            link,
            first_name,
            last_name,
            new_password,
        } => {
            let done = c
                .invitations
                .accept_invitation(ipb::AcceptInvitationRequest {
                    token: token_of(&link),
                    first_name,
                    last_name,
                    password: new_password,
                })
                .await
                .answer()?;
            Ok(Rows::one(
                vec!["user_id", "org_id", "sign_in_with"],
                vec![
                    json!(done.user_id),
                    json!(done.org_id),
                    json!(done.login_email),
                ],
            ))
        }
        InvitationsCommand::Seats => {
            let request = c.request(ipb::GetSeatUsageRequest {});
            let s = c.invitations.get_seat_usage(request).await.answer()?;
            Ok(Rows::one(
                vec![
                    "seat_limit",
                    "active_users",
                    "pending_invitations",
                    "seats_left",
                ],
                vec![
                    json!(s.seat_limit),
                    json!(s.active_users),
                    json!(s.pending_invitations),
                    json!(s.seats_left),
                ],
            ))
        }
        InvitationsCommand::Template {
            locale,
            subject,
            body,
            reset,
        } => {
            let t = if reset || subject.is_some() || body.is_some() {
                c.invitations
                    .update_invitation_template(c.request(ipb::UpdateInvitationTemplateRequest {
                        locale,
                        subject: subject.unwrap_or_default(),
                        body: body.unwrap_or_default(),
                        reset,
                    }))
                    .await
            } else {
                c.invitations
                    .get_invitation_template(
                        c.request(ipb::GetInvitationTemplateRequest { locale }),
                    )
                    .await
            }
            .answer()?;
            Ok(Rows::one(
                vec!["locale", "customized", "subject", "body"],
                vec![
                    json!(t.locale),
                    json!(t.customized),
                    json!(t.subject),
                    json!(t.body),
                ],
            ))
        }
    }
}

pub(crate) async fn links(c: &mut Clients, cmd: LinksCommand) -> anyhow::Result<Rows> {
    let columns = vec![
        "id",
        "url",
        "domains",
        "approval",
        "disabled",
        "registrations",
        "uses",
        "expires",
    ];
    let row = |l: &ipb::RegistrationLink| {
        vec![
            json!(l.id),
            json!(l.url),
            json!(l.allowed_domains.join(",")),
            json!(l.requires_approval),
            json!(l.disabled),
            json!(l.registrations),
            // Confirmed registrations, of the most the link allows.
            json!(match l.max_uses {
                Some(max) => format!("{}/{max}", l.uses),
                None => l.uses.to_string(),
            }),
            json!(time(l.expire_time.as_ref(), Clock::Minutes)),
        ]
    };
    match cmd {
        LinksCommand::Create {
            domain,
            requires_approval,
            department,
            valid_days,
            max_uses,
        } => {
            let request = c.request(ipb::CreateRegistrationLinkRequest {
                allowed_domains: domain,
                requires_approval,
                department_id: department,
                valid_days,
                max_uses,
            });
            let l = c
                .invitations
                .create_registration_link(request)
                .await
                .answer()?;
            Ok(Rows::one(columns, row(&l)))
        }
        LinksCommand::List => {
            let request = c.request(ipb::ListRegistrationLinksRequest {
                page_size: 500,
                page_token: String::new(),
            });
            let page = c
                .invitations
                .list_registration_links(request)
                .await
                .answer()?;
            let mut rows = Rows::new("registration_links", columns);
            rows.rows = page.links.iter().map(row).collect();
            Ok(rows)
        }
        LinksCommand::Disable { id } => {
            let request = c.request(ipb::DisableRegistrationLinkRequest { id });
            let l = c
                .invitations
                .disable_registration_link(request)
                .await
                .answer()?;
            Ok(Rows::one(columns, row(&l)))
        }
        LinksCommand::Join {
            link,
            email,
            first_name,
            last_name,
        } => {
            let answer = c
                .invitations
                .register_with_link(ipb::RegisterWithLinkRequest {
                    link_token: token_of(&link),
                    email,
                    first_name,
                    last_name,
                    locale: String::new(),
                })
                .await
                .answer()?;
            Ok(Rows::one(
                vec!["awaiting_approval", "message"],
                vec![json!(answer.awaiting_approval), json!(answer.message)],
            ))
        }
    }
}
