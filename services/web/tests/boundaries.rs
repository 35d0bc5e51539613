//! The console calls the services only through `mailroom-clients`: it depends on no service
//! crate, so it cannot reach a database, a key or a rule of theirs directly.

#[test]
fn the_console_depends_on_no_service_crate() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("the console's Cargo.toml");
    for service in [
        "mailroom-identity",
        "mailroom-access",
        "mailroom-mailboxes",
        "mailroom-sync",
        "mailroom-invitations",
        "sqlx",
        "rdkafka",
    ] {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with(service)),
            "services/web depends on {service}"
        );
    }
}
