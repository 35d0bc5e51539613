//! Metrics where they are announced: every service hosted in one process answers on its own
//! metrics port (`mailroom dev`, `serve identity,access`), each with the process's registry.

use mailroom_tests::scrape_metrics;

#[tokio::test]
async fn every_services_metrics_port_answers_with_the_process_metrics() {
    let identity = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("identity's port");
    let access = mailroom_platform::metrics::serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("access's port");
    assert_ne!(identity, access);
    metrics::counter!(mailroom_platform::metrics::GRPC_REQUESTS, "method" => "/probe", "code" => "0")
        .increment(3);
    for addr in [identity, access] {
        let response = scrape_metrics(addr).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{addr}: {response}");
        assert!(
            response.contains("mailroom_grpc_requests_total{method=\"/probe\",code=\"0\"} 3"),
            "{addr}: {response}"
        );
    }
}
