//! A registration link behind an ingress, and its budgets, as an attacker uses them: each
//! client is the address the trusted proxy names (not the proxy), one network gets only its
//! share of a link, requests the link refuses spend nothing, and a link's maximum of uses holds
//! when an acceptance fails half way and is retried.

use super::*;

/// A link of `org` made by its admin (through `client`); returns it and its secret.
async fn link(
    client: &Client,
    org: &TestOrg,
    request: ipb::CreateRegistrationLinkRequest,
) -> (ipb::RegistrationLink, String) {
    let link = client
        .clone()
        .create_registration_link(authed(&org.admin_token, request))
        .await
        .expect("create link")
        .into_inner();
    let secret = link.url.rsplit('=').next().unwrap_or_default().to_owned();
    (link, secret)
}

/// A registration of `email` through the link `secret`, from `client_address` as the
/// ingress (loopback) names it in `x-forwarded-for`.
async fn register_from(
    client: &Client,
    client_address: &str,
    secret: &str,
    email: &str,
) -> Result<ipb::RegisterWithLinkResponse, tonic::Status> {
    let mut request = tonic::Request::new(ipb::RegisterWithLinkRequest {
        link_token: secret.into(),
        email: email.into(),
        first_name: "Spam".into(),
        last_name: "Bot".into(),
        locale: String::new(),
    });
    request.metadata_mut().insert(
        "x-forwarded-for",
        format!("10.9.9.9, {client_address}")
            .parse()
            .expect("ASCII"),
    );
    client
        .clone()
        .register_with_link(request)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn behind_an_ingress_one_network_uses_only_its_share_of_a_link_and_refused_requests_spend_none(
) {
    let app = spawn_app_with_invitations().await;
    // The replica behind the ingress (loopback): 3 registrations per link and network, 5 per
    // link in all.
    let stop = CancellationToken::new();
    let behind_ingress = app
        .start_invitations(stop.clone(), |c| {
            c.trusted_proxies = vec!["127.0.0.0/8".into()];
            c.registrations_per_link_per_network_per_hour = 3;
            c.registrations_per_link_per_hour = 5;
        })
        .await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let (_, secret) = link(
        &behind_ingress,
        &org,
        ipb::CreateRegistrationLinkRequest {
            allowed_domains: vec![org.domain.clone()],
            ..Default::default()
        },
    )
    .await;
    let (attacker, neighbour, third) = ("198.51.100.7", "203.0.113.9", "192.0.2.33");

    // Requests the link refuses (another domain) spend none of its budget (before the fix,
    // each spent one, and the link was closed to everyone after five).
    for k in 0..10 {
        let refused = register_from(
            &behind_ingress,
            attacker,
            &secret,
            &format!("spam{k}@elsewhere.test"),
        )
        .await
        .expect_err("another domain");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    // One network: its share, then refused for this link.
    for k in 0..3 {
        register_from(
            &behind_ingress,
            attacker,
            &secret,
            &org.address(&format!("a{k}")),
        )
        .await
        .unwrap_or_else(|s| panic!("registration {k} from the attacker's network: {s:?}"));
    }
    let refused = register_from(&behind_ingress, attacker, &secret, &org.address("a3"))
        .await
        .expect_err("past the network's share of the link");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("through this link from your network per hour"),
        "{}",
        refused.message()
    );
    // Another network, through the same ingress, still registers (before the fix every caller
    // was the ingress's network, and was refused with the attacker).
    for k in 0..2 {
        register_from(
            &behind_ingress,
            neighbour,
            &secret,
            &org.address(&format!("b{k}")),
        )
        .await
        .unwrap_or_else(|s| panic!("registration {k} from another network: {s:?}"));
    }
    // The link's total holds across networks.
    let refused = register_from(&behind_ingress, third, &secret, &org.address("c0"))
        .await
        .expect_err("past the link's total");
    assert!(
        refused.message().contains("through this link per hour"),
        "{}",
        refused.message()
    );
    stop.cancel();
}

#[tokio::test]
async fn an_acceptance_retried_after_a_failed_activation_keeps_its_use_of_a_limited_link() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let client = app.invitations();
    let (made, secret) = link(
        &client,
        &org,
        ipb::CreateRegistrationLinkRequest {
            max_uses: Some(1),
            ..Default::default()
        },
    )
    .await;
    let (first, second) = (org.address("first"), org.address("second"));
    for address in [&first, &second] {
        client
            .clone()
            .register_with_link(ipb::RegisterWithLinkRequest {
                link_token: secret.clone(),
                email: address.clone(),
                first_name: "Reg".into(),
                last_name: "Istrant".into(),
                locale: String::new(),
            })
            .await
            .expect("register");
    }
    let token_of = |address: String| {
        let app = &app;
        async move {
            let mail = wait_for_mail_where(app, &address, Duration::from_secs(30), |m| {
                m.contains("Confirm")
            })
            .await;
            link_token(&parsed(&mail).body_text(0).expect("a text body"))
        }
    };
    let (token_first, token_second) = (token_of(first.clone()).await, token_of(second).await);
    let accept_with = |token: String, password: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .accept_invitation(ipb::AcceptInvitationRequest {
                    token,
                    first_name: "Reg".into(),
                    last_name: "Istrant".into(),
                    password: password.into(),
                })
                .await
        }
    };

    // The first confirms: admitted at identity (the link's one use), then the activation
    // fails (identity refuses the password).
    let failed = accept_with(token_first.clone(), "short")
        .await
        .expect_err("identity refuses a short password");
    assert_eq!(failed.code(), tonic::Code::InvalidArgument, "{failed:?}");
    // The second must not take a use the first holds (before the fix it did, and the first
    // then joined too: two people through a link for one).
    let refused = accept_with(token_second, NEW_PASSWORD)
        .await
        .expect_err("the link's one use is held by the first");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("used up"),
        "{}",
        refused.message()
    );
    accept_with(token_first, NEW_PASSWORD)
        .await
        .expect("the first, trying again, joins");
    let links = client
        .clone()
        .list_registration_links(authed(
            &org.admin_token,
            ipb::ListRegistrationLinksRequest::default(),
        ))
        .await
        .expect("list links")
        .into_inner()
        .links;
    let listed = links.iter().find(|l| l.id == made.id).expect("the link");
    assert_eq!((listed.max_uses, listed.uses), (Some(1), 1));
}
