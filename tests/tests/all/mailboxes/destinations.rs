//! Where the registry will not connect (issue 20, item 4): a mailbox's server named as a
//! cluster service, a private, link-local (metadata) or NAT64-mapped address is refused before
//! any connection, with a message that says why; the local stack allows loopback only.

use super::*;

#[tokio::test]
async fn servers_inside_the_cluster_or_on_metadata_addresses_are_refused_before_any_connection() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let owner = app.create_user(&org, "prober", "").await;
    for (host, why) in [
        ("redis", "single-label"),
        ("mailroom-identity.mailroom.svc.cluster.local", "cluster"),
        ("metadata.google.internal", "cluster"),
        ("10.0.0.1", "private network"),
        ("100.100.100.200", "carrier-grade NAT"),
        ("169.254.169.254", "link-local"),
        ("::ffff:169.254.169.254", "IPv6 form"),
        ("64:ff9b::a9fe:a9fe", "IPv6 form"),
        ("fd00:ec2::254", "unique local"),
    ] {
        let mut request = connect_request(&bulk(1), &owner.id, BULK_PASSWORD);
        request.validate_only = true;
        if let Some(imap) = request.mailbox.as_mut().and_then(|m| m.imap.as_mut()) {
            imap.host = host.into();
            imap.port = 993;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let (status, took) = loop {
            let started = Instant::now();
            let status = app
                .mailboxes()
                .connect_mailbox(authed(&org.admin_token, request.clone()))
                .await
                .expect_err(host);
            // Access control may not have heard of the owner made a moment ago.
            if status.code() == Code::Unavailable && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            break (status, started.elapsed());
        };
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{host}: {status:?}"
        );
        assert!(
            status.message().contains(why),
            "{host}: the message says why ({why}): {}",
            status.message()
        );
        // Refused by the policy, not by a connection that timed out (the login check's
        // deadline is 4 s). The first call may also wait up to 5 s for the registry to hear
        // of the owner made a moment ago, so it is not timed.
        if host != "redis" {
            assert!(took < Duration::from_secs(3), "{host}: {took:?}");
        }
    }
}
