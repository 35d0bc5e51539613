//! `mailroom ctl` as an operator's script runs it (issue 25, item 7): a contexts file chooses
//! the services and the operator's credential; `-o json` and `-o yaml` print one document;
//! `access check --fail-on-deny` exits 3 on a denial and 0 when allowed, and other failures
//! have their own statuses; `mailroom completion` prints a script.
//!
//! **Needs the real binary**: these tests run `target/debug/mailroom` (or `MAILROOM_BIN`)
//! against services the harness starts. Build it first: `cargo build -p mailroom`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mailroom_tests::{
    closed_port, mailroom_binary, spawn_app_with_access, test_secret, TestApp, PASSWORD,
    TEST_CLIENT,
};
use serde_json::Value;

/// Every variable `ctl` reads, so the test's environment cannot choose for it.
const CTL_VARIABLES: [&str; 18] = [
    "MAILROOM_CONTEXT",
    "MAILROOM_CTL_CONFIG",
    "MAILROOM_IDENTITY_ENDPOINT",
    "MAILROOM_ACCESS_ENDPOINT",
    "MAILROOM_MAILBOXES_ENDPOINT",
    "MAILROOM_SYNC_ENDPOINT",
    "MAILROOM_INVITATIONS_ENDPOINT",
    "MAILROOM_TOKEN",
    "MAILROOM_EMAIL",
    "MAILROOM_PASSWORD",
    "MAILROOM_CLIENT_ID",
    "MAILROOM_CLIENT_SECRET",
    "MAILROOM_GRPC_TLS__CA_FILE",
    "MAILROOM_GRPC_TLS__CERT_FILE",
    "MAILROOM_GRPC_TLS__KEY_FILE",
    "XDG_CONFIG_HOME",
    "MAILROOM_NEW_ADMIN_PASSWORD",
    "MAILROOM_NEW_USER_PASSWORD",
];

/// `mailroom <args>` with the contexts file `config` and the variables `env`, run off the
/// test's runtime (whose threads serve the services it calls). Also used by `ctl_tls`.
pub(crate) async fn mailroom(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(mailroom_binary());
    for name in CTL_VARIABLES {
        command.env_remove(name);
    }
    command.env("MAILROOM_CTL_CONFIG", config).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().expect("mailroom runs"))
        .await
        .expect("the command's thread")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn explain(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private folder with a contexts file: `test` (current) reaches `app` with the operator's
/// secret from a file beside it; `down` names an identity nothing listens on.
fn contexts_for(app: &TestApp) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mailroom-ctl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let secret = dir.join("operator.secret");
    std::fs::write(&secret, format!("{}\n", test_secret(TEST_CLIENT))).expect("the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let closed = closed_port();
    let access = app.access_endpoint.clone().expect("access runs");
    let config = dir.join("ctl.yaml");
    std::fs::write(
        &config,
        format!(
            "# written by the ctl_contexts test
current-context: test
contexts:
  test:
    endpoints:
      identity: {identity}
      access: {access}
    client-id: {TEST_CLIENT}
    client-secret-file: operator.secret
  down:
    endpoints:
      identity: http://127.0.0.1:{closed}
    client-id: {TEST_CLIENT}
    client-secret-env: NOT_SET_ANYWHERE
",
            identity = app.endpoint,
        ),
    )
    .expect("the contexts file");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_runs_in_a_context_prints_one_document_as_json_or_yaml_and_exits_by_outcome() {
    let app = spawn_app_with_access().await;
    let config = contexts_for(&app);

    // The current context chooses identity and the operator's credential: creating an
    // organisation takes the operator.
    let domain = format!("t{}.test", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let admin = format!("admin@{domain}");
    let created = mailroom(
        &config,
        &[("MAILROOM_NEW_ADMIN_PASSWORD", PASSWORD)],
        &[
            "ctl",
            "org",
            "create",
            "--name",
            "Ctl Org",
            "--admin-email",
            &admin,
            "-o",
            "json",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", explain(&created));
    let org: Value = serde_json::from_str(&stdout(&created)).expect("one JSON object");
    assert!(
        org["id"].as_str().is_some_and(|id| !id.is_empty()),
        "a single resource is its object: {org}"
    );

    // A person's credentials (variables) override the context's service client; the context
    // still gives the endpoints. The list prints the same document as JSON and as YAML.
    let as_admin = [
        ("MAILROOM_EMAIL", admin.as_str()),
        ("MAILROOM_PASSWORD", PASSWORD),
    ];
    let json = mailroom(&config, &as_admin, &["ctl", "users", "list", "-o", "json"]).await;
    assert!(json.status.success(), "{}", explain(&json));
    let yaml = mailroom(&config, &as_admin, &["ctl", "users", "list", "-o", "yaml"]).await;
    assert!(yaml.status.success(), "{}", explain(&yaml));
    let from_json: Value = serde_json::from_str(&stdout(&json)).expect("JSON");
    let from_yaml: Value = serde_yaml_ng::from_str(&stdout(&yaml)).expect("YAML");
    assert_eq!(from_json, from_yaml, "the same document");
    assert_eq!(from_json["kind"], "users", "{from_json}");
    let items = from_json["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "the new org's admin: {from_json}");
    assert_eq!(items[0]["login_email"], admin.as_str());

    // A plain member next to the admin.
    let member = format!("member@{domain}");
    let added = mailroom(
        &config,
        &as_admin,
        &[
            "ctl",
            "users",
            "create",
            "--login-email",
            &member,
            "--first-name",
            "Mo",
            "--last-name",
            "Member",
            "--user-password",
            PASSWORD,
            "-o",
            "json",
        ],
    )
    .await;
    assert!(added.status.success(), "{}", explain(&added));

    // Allowed: exit 0, once access control has heard of the organisation.
    let check = |user: String| {
        let config = config.clone();
        let as_admin = as_admin.map(|(k, v)| (k, v.to_owned()));
        async move {
            let env: Vec<(&str, &str)> = as_admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
            mailroom(
                &config,
                &env,
                &[
                    "ctl",
                    "access",
                    "check",
                    "--user",
                    &user,
                    "--permission",
                    "org.manage_permissions",
                    "--fail-on-deny",
                ],
            )
            .await
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let allowed = loop {
        let out = check(admin.clone()).await;
        if out.status.code() == Some(0) || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(allowed.status.code(), Some(0), "{}", explain(&allowed));
    assert!(
        stdout(&allowed).contains("allowed"),
        "{}",
        explain(&allowed)
    );

    // Denied: printed, and exit 3 with --fail-on-deny (0 without it).
    let denied = check(member.clone()).await;
    assert_eq!(denied.status.code(), Some(3), "{}", explain(&denied));
    assert!(stdout(&denied).contains("denied"), "{}", explain(&denied));
    assert!(
        !String::from_utf8_lossy(&denied.stderr).contains("error"),
        "a denial is an answer, not an error: {}",
        explain(&denied)
    );
    let answered = mailroom(
        &config,
        &as_admin,
        &[
            "ctl",
            "access",
            "check",
            "--user",
            &member,
            "--permission",
            "org.manage_permissions",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(answered.status.code(), Some(0), "{}", explain(&answered));
    let verdict: Value = serde_json::from_str(&stdout(&answered)).expect("JSON");
    assert_eq!(
        (verdict["verdict"].as_str(), verdict["allowed"].as_bool()),
        (Some("denied"), Some(false))
    );

    // Failures to ask have their own statuses: a refused password 4, a service that does not
    // answer 69 (a flag overrides the context's endpoint), a context that cannot be used 78.
    let refused = mailroom(
        &config,
        &[
            ("MAILROOM_EMAIL", admin.as_str()),
            ("MAILROOM_PASSWORD", "wrong"),
        ],
        &["ctl", "users", "list"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(4), "{}", explain(&refused));
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let down = mailroom(
        &config,
        &as_admin,
        &["ctl", "--endpoint", &closed, "users", "list"],
    )
    .await;
    assert_eq!(down.status.code(), Some(69), "{}", explain(&down));
    let unusable = mailroom(&config, &[], &["ctl", "--context", "down", "users", "list"]).await;
    assert_eq!(unusable.status.code(), Some(78), "{}", explain(&unusable));
    assert!(
        String::from_utf8_lossy(&unusable.stderr).contains("contexts.down.client-secret-env"),
        "names the key: {}",
        explain(&unusable)
    );
}

#[tokio::test]
async fn ctl_config_lists_switches_and_views_contexts_without_secrets() {
    let dir = std::env::temp_dir().join(format!("mailroom-ctl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let config = dir.join("ctl.yaml");
    std::fs::write(
        &config,
        "current-context: a\ncontexts:\n  a:\n    client-id: operator\n    client-secret: hunter2\n  b:\n    endpoints:\n      identity: https://identity.b.test:50051\n",
    )
    .expect("the contexts file");
    let listed = mailroom(
        &config,
        &[],
        &["ctl", "config", "get-contexts", "-o", "json"],
    )
    .await;
    assert!(listed.status.success(), "{}", explain(&listed));
    let listed: Value = serde_json::from_str(&stdout(&listed)).expect("JSON");
    assert_eq!(listed["kind"], "contexts");
    let current: Vec<(&str, bool)> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or(""), c["current"] == true))
        .collect();
    assert_eq!(current, vec![("a", true), ("b", false)]);

    let switched = mailroom(&config, &[], &["ctl", "config", "use-context", "b"]).await;
    assert!(switched.status.success(), "{}", explain(&switched));
    let now = mailroom(&config, &[], &["ctl", "config", "current-context"]).await;
    assert_eq!(stdout(&now).trim(), "b", "{}", explain(&now));
    // MAILROOM_CONTEXT chooses over the file.
    let chosen = mailroom(
        &config,
        &[("MAILROOM_CONTEXT", "a")],
        &["ctl", "config", "current-context"],
    )
    .await;
    assert_eq!(stdout(&chosen).trim(), "a", "{}", explain(&chosen));

    let view = mailroom(&config, &[], &["ctl", "config", "view"]).await;
    assert!(view.status.success(), "{}", explain(&view));
    let shown = stdout(&view);
    assert!(
        !shown.contains("hunter2")
            && shown.contains("REDACTED")
            && shown.contains("current-context: b"),
        "{shown}"
    );

    let script = mailroom(&config, &[], &["completion", "bash"]).await;
    assert!(script.status.success(), "{}", explain(&script));
    assert!(stdout(&script).contains("mailroom"), "{}", explain(&script));
}

/// A context's secret goes only to the context's identity: a leftover
/// `MAILROOM_IDENTITY_ENDPOINT` is refused (78, nothing sent) unless `--allow-endpoint-override`;
/// no password or secret crosses a network in plaintext without `--insecure`; TLS files beside
/// an `http://` endpoint are warned about. Each refusal comes before any connection.
#[tokio::test]
async fn ctl_sends_no_secret_to_an_overriding_or_plaintext_identity_unless_allowed() {
    let dir = std::env::temp_dir().join(format!("mailroom-ctl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a folder");
    std::fs::write(dir.join("ca.crt"), "not needed before connecting").expect("a CA file");
    let config = dir.join("ctl.yaml");
    std::fs::write(
        &config,
        "current-context: prod\ncontexts:\n  prod:\n    endpoints:\n      identity: https://identity.prod.invalid:50051\n    client-id: operator\n    client-secret-env: PROD_OPERATOR_SECRET\n  plain:\n    endpoints:\n      identity: http://127.0.0.1:9\n    tls:\n      ca-file: ca.crt\n",
    )
    .expect("the contexts file");
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let secret = "prod-operator-secret-7431";
    let leftover = [
        ("PROD_OPERATOR_SECRET", secret),
        ("MAILROOM_IDENTITY_ENDPOINT", closed.as_str()),
    ];
    let refused = mailroom(&config, &leftover, &["ctl", "org", "get"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(78), "{}", explain(&refused));
    assert!(
        stderr.contains("context `prod`")
            && stderr.contains(&closed)
            && stderr.contains("--allow-endpoint-override")
            && !stderr.contains(secret),
        "{}",
        explain(&refused)
    );
    // Allowed: it goes on to identity (which does not answer there: 69, not 78).
    let allowed = mailroom(
        &config,
        &leftover,
        &["ctl", "--allow-endpoint-override", "org", "get"],
    )
    .await;
    assert_eq!(allowed.status.code(), Some(69), "{}", explain(&allowed));

    // A password over http:// to another machine (TEST-NET-1: never reached).
    let plaintext = mailroom(
        &config,
        &[
            ("MAILROOM_EMAIL", "admin@acme.test"),
            ("MAILROOM_PASSWORD", "a-password"),
        ],
        &[
            "ctl",
            "--endpoint",
            "http://192.0.2.1:50051",
            "users",
            "list",
        ],
    )
    .await;
    assert_eq!(plaintext.status.code(), Some(78), "{}", explain(&plaintext));
    assert!(
        String::from_utf8_lossy(&plaintext.stderr).contains("--insecure"),
        "{}",
        explain(&plaintext)
    );

    // TLS files with a plaintext endpoint: said, then tried (and unreachable here).
    let warned = mailroom(&config, &[], &["ctl", "--context", "plain", "jwks"]).await;
    assert_eq!(warned.status.code(), Some(69), "{}", explain(&warned));
    assert!(
        String::from_utf8_lossy(&warned.stderr)
            .contains("contexts.plain.endpoints.identity http://127.0.0.1:9"),
        "{}",
        explain(&warned)
    );
}
