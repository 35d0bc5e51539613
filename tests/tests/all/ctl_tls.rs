//! `mailroom ctl` over gRPC TLS and mutual TLS, as an operator runs it against a deployment:
//! a contexts file names the `https://` endpoints, the TLS files (relative to the file) and
//! the operator's credential. With the services' CA (`tls.ca-file`) the operator lists dead
//! letters over TLS; over mutual TLS only with a client certificate of that CA
//! (`tls.cert-file`, `tls.key-file`) — without it, and without the CA (the public web roots
//! only), `ctl` exits 69 (a service did not answer) saying which endpoint and why, and sends
//! no secret.
//!
//! The services are `grpc_tls`'s (identity, and access, on TLS ports with a test CA; their
//! certificate names `localhost`, so no `tls.server-name` is needed); the command runner is
//! `ctl_contexts`'s.
//!
//! **Needs the real binary**: these tests run `target/debug/mailroom` (or `MAILROOM_BIN`).
//! Build it first: `cargo build -p mailroom`.

use std::path::{Path, PathBuf};
use std::process::Output;

use mailroom_tests::{test_secret, TEST_CLIENT};
use serde_json::Value;

use crate::ctl_contexts::{explain, mailroom, stdout};
use crate::grpc_tls::{start, TlsServices};

/// A private contexts file in the services' folder (beside `ca.crt`), with the operator's
/// secret in a file and a client certificate for the operator issued by the services' CA, all
/// named relative to it. No current context: each command names one.
/// - `with-ca`: trusts the services' CA;
/// - `with-client-cert`: the same, presenting the operator's certificate (mutual TLS);
/// - `public-roots`: no TLS files, so it trusts the public web roots only.
fn contexts_for(services: &TlsServices) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let private = |path: &Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod")
    };
    let dir = &services.dir;
    let secret = dir.join("operator.secret");
    std::fs::write(&secret, format!("{}\n", test_secret(TEST_CLIENT))).expect("the secret");
    private(&secret);
    services
        .ca
        .issue("mailroom operator", &["operator.mailroom.test"])
        .write(dir, "operator");

    let mut endpoints = format!("      identity: {}\n", services.identity);
    if let Some(access) = &services.access {
        endpoints.push_str(&format!("      access: {access}\n"));
    }
    let context = |name: &str, tls: &str| {
        format!(
            "  {name}:\n    endpoints:\n{endpoints}{tls}    client-id: {TEST_CLIENT}\n    client-secret-file: operator.secret\n"
        )
    };
    let text = [
        "# written by the ctl_tls test\ncontexts:\n".to_owned(),
        context("with-ca", "    tls:\n      ca-file: ca.crt\n"),
        context(
            "with-client-cert",
            "    tls:\n      ca-file: ca.crt\n      cert-file: operator.crt\n      key-file: operator.key\n",
        ),
        context("public-roots", ""),
    ]
    .concat();
    let config = dir.join("ctl.yaml");
    std::fs::write(&config, text).expect("the contexts file");
    private(&config);
    config
}

/// `mailroom ctl --context <context> <args>`.
async fn ctl_in(config: &Path, context: &str, args: &[&str]) -> Output {
    let mut all = vec!["ctl", "--context", context];
    all.extend_from_slice(args);
    mailroom(config, &[], &all).await
}

/// `ctl events dead-letters list --service <service> -o json`: a read only the operator may
/// make (with a service token from identity, over the same TLS).
fn list_dead_letters(service: &str) -> [&str; 7] {
    [
        "events",
        "dead-letters",
        "list",
        "--service",
        service,
        "-o",
        "json",
    ]
}

/// `list_dead_letters(service)` in `context`, asked again (≤ 60 s) while the service says it
/// has not yet read the token revocations published before it started (UNAVAILABLE, "try
/// again in a moment"): on a loaded machine that lasts past the moment its port answers.
async fn list_when_ready(config: &Path, context: &str, service: &str) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed = ctl_in(config, context, &list_dead_letters(service)).await;
        let not_yet = String::from_utf8_lossy(&listed.stderr)
            .contains("has not yet read the token revocations");
        if !not_yet || std::time::Instant::now() > deadline {
            return listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The `{"kind": "dead_letters", "items": […]}` a successful list prints.
fn assert_listed(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", explain(out));
    let listed: Value = serde_json::from_str(&stdout(out)).expect("one JSON document");
    assert_eq!(listed["kind"], "dead_letters", "{listed}");
    assert!(listed["items"].is_array(), "{listed}");
}

/// TLS: the context naming the services' CA signs the operator in and lists identity's dead
/// letters over `https://`; a context without it (the public web roots only) is refused the
/// server's certificate: exit 69, naming identity's endpoint and the verification failure.
#[tokio::test(flavor = "multi_thread")]
async fn ctl_tls_context_with_the_ca_is_answered_and_public_roots_are_refused() {
    let services = start(false, false).await;
    services.wait_until_serving(&services.identity).await;
    let config = contexts_for(&services);

    let listed = list_when_ready(&config, "with-ca", "identity").await;
    assert_listed(&listed);

    let refused = ctl_in(&config, "public-roots", &list_dead_letters("identity")).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(69), "{}", explain(&refused));
    assert!(
        stderr.contains(&format!("cannot reach identity at {}", services.identity))
            && stderr.contains("invalid peer certificate: UnknownIssuer"),
        "names the endpoint and why its certificate is not trusted: {}",
        explain(&refused)
    );
}

/// Mutual TLS: with the operator's client certificate the context lists access control's dead
/// letters (identity and access both over mutual TLS); the same context without the
/// certificate is refused at the handshake: exit 69, naming identity's endpoint and pointing
/// at the context's TLS, and the secret is not printed.
#[tokio::test(flavor = "multi_thread")]
async fn ctl_mutual_tls_context_needs_its_client_certificate() {
    let services = start(true, true).await;
    services.wait_until_serving(&services.identity).await;
    let access = services.access.clone().expect("access runs");
    services.wait_until_serving(&access).await;
    let config = contexts_for(&services);

    let listed = list_when_ready(&config, "with-client-cert", "access").await;
    assert_listed(&listed);

    // (Under TLS 1.3 the server refuses a missing certificate after the client's side of the
    // handshake is done, so the transport's own words for it vary: ctl's sentence does not.)
    let refused = ctl_in(&config, "with-ca", &list_dead_letters("access")).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(69), "{}", explain(&refused));
    assert!(
        stderr.contains(&format!("cannot reach identity at {}", services.identity))
            && stderr.contains("the context's endpoints and TLS right"),
        "names the endpoint and the context's TLS: {}",
        explain(&refused)
    );
    assert!(
        !stderr.contains(&test_secret(TEST_CLIENT)),
        "{}",
        explain(&refused)
    );
}
