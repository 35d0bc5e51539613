//! Sign-in, tokens and the boundary between organisations.

use std::sync::Arc;
use std::time::Duration;

use mailroom_platform::auth::{GrpcKeySource, Principal, TokenVerifier};
use mailroom_tests::identity_pb as pb;
use mailroom_tests::{authed, spawn_app, spawn_app_with, spawn_app_with_access, AppOptions};
use tonic::Code;

#[tokio::test]
async fn access_tokens_verify_through_the_published_jwks() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let jwks = app
        .auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].crv, "Ed25519");
    let doc: serde_json::Value = serde_json::from_str(&jwks.json).expect("JWKS JSON");
    assert_eq!(doc["keys"][0]["kid"], jwks.keys[0].kid);

    // Another service verifies with keys fetched over gRPC, as a co-located service would.
    let verifier = TokenVerifier::from_source(Arc::new(GrpcKeySource::new(app.endpoint.clone())));
    let claims = verifier.verify(&org.admin_token).await.expect("verifies");
    assert!(claims.admin);
    assert_eq!(claims.org.map(|o| o.to_string()), Some(org.id.clone()));
    assert!(matches!(
        Principal::from_claims(&claims),
        Ok(Principal::User { admin: true, .. })
    ));

    // A token from another deployment (other keys) is refused, by the verifier and the server.
    let other = spawn_app().await;
    let foreign = other.create_org(0).await;
    assert!(verifier.verify(&foreign.admin_token).await.is_err());
    let status = app
        .identity
        .clone()
        .get_organization(authed(
            &foreign.admin_token,
            pb::GetOrganizationRequest::default(),
        ))
        .await
        .expect_err("foreign token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let tampered = format!("{}x", &org.admin_token);
    assert!(verifier.verify(&tampered).await.is_err());
}

#[tokio::test]
async fn calls_without_a_token_get_unauthenticated_with_a_way_forward() {
    let app = spawn_app().await;
    let status = app
        .identity
        .clone()
        .list_users(pb::ListUsersRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Login"), "{}", status.message());
}

#[tokio::test]
async fn one_organisations_token_sees_nothing_of_another() {
    let app = spawn_app().await;
    let a = app.create_org(0).await;
    let b = app.create_org(0).await;
    let b_user = app.create_user(&b, "secret", "").await;
    let b_dept = app.create_department(&b, "Hidden", "", "").await;
    let mut identity = app.identity.clone();

    let status = identity
        .get_user(authed(
            &a.admin_token,
            pb::GetUserRequest {
                id: b_user.id.clone(),
            },
        ))
        .await
        .expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
    let listed = identity
        .list_users(authed(&a.admin_token, pb::ListUsersRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.users.iter().all(|u| u.org_id == a.id));
    assert_eq!(listed.total_size, 1);
    let depts = identity
        .list_departments(authed(
            &a.admin_token,
            pb::ListDepartmentsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(depts.departments.is_empty());
    let status = identity
        .dismiss_user(authed(
            &a.admin_token,
            pb::DismissUserRequest {
                id: b_user.id.clone(),
            },
        ))
        .await
        .expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
    let status = identity
        .get_organization(authed(
            &a.admin_token,
            pb::GetOrganizationRequest {
                org_id: b.id.clone(),
            },
        ))
        .await
        .expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
    let status = identity
        .get_department(authed(
            &a.admin_token,
            pb::GetDepartmentRequest {
                id: b_dept.id.clone(),
            },
        ))
        .await
        .expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
    // The same address may exist in both organisations: claims are per organisation.
    let shared = b_user.login_email.clone();
    app.try_create_user(&a, &shared, "")
        .await
        .expect("same address in another org");
    // Not naming one: only the oldest claim (b's) is tried; naming one reaches its user.
    let oldest = app.login(&shared).await.expect("the oldest claim signs in");
    identity
        .get_user(authed(
            &oldest.access_token,
            pb::GetUserRequest {
                id: b_user.id.clone(),
            },
        ))
        .await
        .expect("signed in to b");
    let pair = app
        .auth
        .clone()
        .login(pb::LoginRequest {
            login_email: shared,
            password: mailroom_tests::PASSWORD.into(),
            org_id: b.id.clone(),
        })
        .await
        .expect("sign-in with org_id")
        .into_inner();
    let me = identity
        .get_user(authed(
            &pair.access_token,
            pb::GetUserRequest {
                id: b_user.id.clone(),
            },
        ))
        .await
        .expect("own org");
    assert_eq!(me.into_inner().org_id, b.id);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_sign_in() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let mut auth = app.auth.clone();
    let first = app.login(&org.admin_email).await.expect("login");
    let second = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .expect("rotate")
        .into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    let reuse = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(
        reuse.message().contains("already used"),
        "{}",
        reuse.message()
    );
    let after = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .expect_err("family revoked");
    assert_eq!(after.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited_per_address() {
    let app = spawn_app_with(AppOptions {
        login_attempts_per_minute: Some(3),
        ..Default::default()
    })
    .await;
    let org = app.create_org(0).await;
    let mut auth = app.auth.clone();
    let mut codes = Vec::new();
    for _ in 0..5 {
        let status = auth
            .login(pb::LoginRequest {
                login_email: org.admin_email.clone(),
                password: "wrong password".into(),
                org_id: String::new(),
            })
            .await
            .expect_err("wrong password");
        codes.push(status.code());
    }
    // create_org signed in once already.
    assert_eq!(&codes[..2], &[Code::Unauthenticated, Code::Unauthenticated]);
    assert!(
        codes[2..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
    let status = app
        .login(&org.admin_email)
        .await
        .expect_err("limited even with the right password");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("try again"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn health_and_reflection_are_served_without_a_token() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(app.endpoint.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "mailroom.identity.v1.IdentityService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "mailroom.access.v1.AccessService".into(),
        })
        .await
        .expect_err("access is not served");
    assert_eq!(unknown.code(), Code::NotFound);
}

/// The services a reflection client of one version (`v1` or `v1alpha`, the same messages in
/// two packages) is told of.
macro_rules! reflected_services {
    ($app:expr, $version:ident) => {{
        use tokio_stream::StreamExt as _;
        use tonic_reflection::pb::$version as r;
        let channel = tonic::transport::Channel::from_shared($app.endpoint.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = r::server_reflection_client::ServerReflectionClient::new(channel);
        let request = r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(concat!(stringify!($version), " reflection is served"))
            .into_inner();
        match replies.next().await {
            Some(Ok(r::ServerReflectionResponse {
                message_response:
                    Some(r::server_reflection_response::MessageResponse::ListServicesResponse(list)),
                ..
            })) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("{}: {other:?}", stringify!($version)),
        }
    }};
}

#[tokio::test]
async fn reflection_answers_v1_and_v1alpha_clients_alike() {
    let app = spawn_app().await;
    let mut v1 = reflected_services!(app, v1);
    let mut alpha = reflected_services!(app, v1alpha);
    v1.sort();
    alpha.sort();
    assert!(
        alpha.contains(&"mailroom.identity.v1.IdentityService".to_owned()),
        "{alpha:?}"
    );
    assert_eq!(v1, alpha);
    assert!(
        !alpha.iter().any(|s| s.contains("access")),
        "only what is served: {alpha:?}"
    );
}

/// A service asked to stop goes on answering for its drain time while its health says
/// NOT_SERVING (so callers balancing over its headless Service move away without a failed
/// call), and stops listening after it.
#[tokio::test]
async fn a_stopping_service_drains_answering_not_serving_then_stops_listening() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let app = spawn_app_with_access().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let endpoint = app
        .start_access_replica_on(|p| p.shutdown_drain_ms = 3_000, stop.clone())
        .await;
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("the replica listens");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |r: tonic_health::pb::HealthCheckResponse| r.status;
    // Ready once its first readiness check has reached the database (milliseconds after it
    // listens).
    let ready_by = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health answers");
        if status(serving.into_inner()) == ServingStatus::Serving as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < ready_by,
            "the replica is ready within 10 s of listening"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let draining = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("a draining service still answers");
    assert_eq!(
        status(draining.into_inner()),
        ServingStatus::NotServing as i32,
        "health says NOT_SERVING while draining"
    );
    // A new connection is still accepted while draining.
    tonic::transport::Channel::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("a new caller still connects while draining");

    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = tokio::net::TcpStream::connect(endpoint.trim_start_matches("http://")).await;
    assert!(
        after.is_err(),
        "the listener is closed once the drain is over"
    );
}
