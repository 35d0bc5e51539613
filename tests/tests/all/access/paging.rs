//! Paged lookups over gRPC: LookupSubjects a page at a time, and the pages of one walk read
//! at the first page's revision unless the caller asks for a newer one.
//!
//! A replica keeps only answers larger than a default page (1,000 ids) for their next pages;
//! these tests ask a replica that keeps every answer, so a handful of holders shows it.

use super::*;

type AccessClient = apb::access_service_client::AccessServiceClient<tonic::transport::Channel>;

/// A replica of `app`'s access control that keeps even small answers for their next pages.
async fn keeping_replica(
    app: &TestApp,
    stop: &tokio_util::sync::CancellationToken,
) -> AccessClient {
    app.start_access_replica_with(stop.clone(), |c| c.lookup_cache_min_ids = 0)
        .await
        .0
}

/// One page of LookupSubjects(mailbox.read_mail) on `mailbox`.
async fn subjects_page(
    access: &AccessClient,
    token: &str,
    mailbox: &str,
    page_size: i32,
    page_token: &str,
    at: Option<apb::Revision>,
) -> Result<apb::LookupSubjectsResponse, tonic::Status> {
    access
        .clone()
        .lookup_subjects(authed(
            token,
            apb::LookupSubjectsRequest {
                resource: object("mailbox", mailbox),
                permission: "mailbox.read_mail".into(),
                subject_type: "user".into(),
                at_least_as_fresh_as: at,
                page_size,
                page_token: page_token.to_owned(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn lookup_subjects_pages_through_every_holder_at_one_revision() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let service = app.service_token().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let replica = keeping_replica(&app, &stop).await;
    let readers = [
        &o.org.admin_id,
        &o.ceo.id,
        &o.east_head.id,
        &o.other_head.id,
        &o.peer.id,
    ];
    let written = app
        .write_when_known(
            &service,
            readers
                .iter()
                .map(|r| on_mailbox(&o.mailbox, "reader", r))
                .collect(),
        )
        .await;
    let mut holders: Vec<String> = readers.iter().map(|r| (*r).clone()).collect();
    holders.push(o.owner.id.clone());
    holders.sort();

    // Without a page size: one page of all six, and no token.
    let whole = subjects_page(&replica, &service, &o.mailbox, 0, "", Some(written.clone()))
        .await
        .expect("lookup subjects");
    assert_eq!(whole.subject_ids, holders);
    assert!(whole.next_page_token.is_empty());

    // Four a page: two pages, in order, nothing twice, at the first page's revision.
    let first = subjects_page(&replica, &service, &o.mailbox, 4, "", Some(written.clone()))
        .await
        .expect("first page");
    assert_eq!(first.subject_ids, holders[..4]);
    assert!(!first.next_page_token.is_empty());
    let second = subjects_page(
        &replica,
        &service,
        &o.mailbox,
        4,
        &first.next_page_token,
        None,
    )
    .await
    .expect("second page");
    assert_eq!(second.subject_ids, holders[4..]);
    assert!(second.next_page_token.is_empty());
    assert_eq!(second.looked_up_at, first.looked_up_at);

    // A reader on the second page gives up the grant: the walk begun before still reads at
    // its revision; asked at the revocation's revision, the page is read at the newest.
    let gone = holders[4..]
        .iter()
        .rfind(|h| **h != o.owner.id)
        .cloned()
        .expect("a reader on the second page");
    let revoked = app
        .access()
        .delete_relationships(authed(
            &service,
            apb::DeleteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &gone)],
            },
        ))
        .await
        .expect("revoke")
        .into_inner()
        .deleted_at
        .expect("revision");
    let again = subjects_page(
        &replica,
        &service,
        &o.mailbox,
        4,
        &first.next_page_token,
        None,
    )
    .await
    .expect("second page again");
    assert_eq!(again.subject_ids, holders[4..], "the walk's own revision");
    assert_eq!(again.looked_up_at, first.looked_up_at);
    let fresh = subjects_page(
        &replica,
        &service,
        &o.mailbox,
        4,
        &first.next_page_token,
        Some(revoked.clone()),
    )
    .await
    .expect("second page, fresh");
    let left: Vec<String> = holders[4..]
        .iter()
        .filter(|h| **h != gone)
        .cloned()
        .collect();
    assert_eq!(fresh.subject_ids, left, "read at the revocation");
    assert_ne!(fresh.looked_up_at, first.looked_up_at);

    // A token belongs to its query; page sizes are checked.
    let err = subjects_page(
        &replica,
        &service,
        &o.peer.id,
        4,
        &first.next_page_token,
        None,
    )
    .await
    .expect_err("another mailbox's token");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = subjects_page(&replica, &service, &o.mailbox, -1, "", None)
        .await
        .expect_err("a negative page size");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    stop.cancel();
}

#[tokio::test]
async fn lookup_resources_pages_keep_the_first_pages_revision_unless_asked_for_newer() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let service = app.service_token().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let replica = keeping_replica(&app, &stop).await;
    // Five more mailboxes for the peer, whom the CEO supervises: six in the CEO's view.
    let mut all = vec![o.mailbox.clone()];
    let mut last = None;
    for _ in 0..5 {
        let m = uuid::Uuid::new_v4().to_string();
        last = Some(
            app.write_when_known(&service, vec![on_mailbox(&m, "owner", &o.peer.id)])
                .await,
        );
        all.push(m);
    }
    all.sort();
    let page = |page_token: String, at: Option<apb::Revision>| {
        let mut access = replica.clone();
        let (service, ceo) = (service.clone(), o.ceo.id.clone());
        async move {
            access
                .lookup_resources(authed(
                    &service,
                    apb::LookupResourcesRequest {
                        subject: user(&ceo),
                        permission: "mailbox.view".into(),
                        resource_type: "mailbox".into(),
                        page_size: 4,
                        page_token,
                        at_least_as_fresh_as: at,
                    },
                ))
                .await
                .expect("lookup resources")
                .into_inner()
        }
    };
    let first = page(String::new(), last).await;
    assert_eq!(first.resource_ids, all[..4]);
    // A mailbox that sorts last arrives after the first page.
    let newest = "ffffffff-ffff-4fff-bfff-ffffffffffff";
    let added = app
        .write_when_known(&service, vec![on_mailbox(newest, "owner", &o.peer.id)])
        .await;
    let second = page(first.next_page_token.clone(), None).await;
    assert_eq!(second.resource_ids, all[4..], "the walk's own revision");
    assert_eq!(second.looked_up_at, first.looked_up_at);
    assert!(second.next_page_token.is_empty());
    let fresh = page(first.next_page_token.clone(), Some(added)).await;
    let mut expected = all[4..].to_vec();
    expected.push(newest.to_owned());
    assert_eq!(fresh.resource_ids, expected, "read at the write's revision");
    assert_ne!(fresh.looked_up_at, first.looked_up_at);
    stop.cancel();
}
