//! Where `ctl` refuses to send a secret: a context's operator credential to an identity
//! endpoint a flag or variable put in place of the context's (a leftover
//! `MAILROOM_IDENTITY_ENDPOINT` would otherwise receive prod's secret), and any password or
//! client secret over plaintext `http://` to another machine. Also the warning for TLS files
//! that an `http://` endpoint does not use. Pure decisions over resolved values: `ctl`'s
//! [`run`](super::run) gathers them and asks before it connects.

use std::net::IpAddr;

use tonic::transport::Uri;

/// The flag that lets a context's credential go to an overriding identity endpoint.
pub const ALLOW_ENDPOINT_OVERRIDE: &str = "--allow-endpoint-override";
/// The flag that lets a password or client secret go over `http://` to another machine.
pub const INSECURE: &str = "--insecure";

/// The secret that signing in sends to identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentSecret {
    /// A person's password (`--email` and `--password`).
    Password,
    /// A service client's secret (`--client-secret`, or the context's).
    ClientSecret,
}

impl SentSecret {
    fn shown(self) -> &'static str {
        match self {
            Self::Password => "the password (--password/MAILROOM_PASSWORD)",
            Self::ClientSecret => "the client secret",
        }
    }
}

/// A context whose credential is the one sent.
#[derive(Debug, Clone, Copy)]
pub struct CredentialContext<'a> {
    pub name: &'a str,
    /// Identity's endpoint as the context gives it (else the local one it falls back to).
    pub identity: &'a str,
}

/// What signing in would send where.
#[derive(Debug, Clone, Copy)]
pub struct Sending<'a> {
    /// Identity's endpoint as resolved (flag or variable, else the context's, else local).
    pub identity: &'a str,
    /// The secret sent to it, if any (a token as given sends none of these).
    pub secret: Option<SentSecret>,
    /// The context the secret comes from, when it does.
    pub from_context: Option<CredentialContext<'a>>,
}

/// What the person running `ctl` explicitly allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed {
    /// `--allow-endpoint-override`.
    pub endpoint_override: bool,
    /// `--insecure`.
    pub insecure: bool,
}

/// A secret `ctl` will not send; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum Unsafe {
    #[error(
        "refusing to send the client secret of context `{context}` to identity at {endpoint}: \
         --endpoint or MAILROOM_IDENTITY_ENDPOINT replaces the context's identity endpoint \
         ({expected}). Unset MAILROOM_IDENTITY_ENDPOINT (or drop --endpoint) to use the \
         context's, or pass {ALLOW_ENDPOINT_OVERRIDE} if {endpoint} is meant to receive it"
    )]
    EndpointOverridden {
        context: String,
        endpoint: String,
        expected: String,
    },
    #[error(
        "refusing to send {what} in plaintext to identity at {endpoint} (http:// to a host \
         other than this machine): use identity's https:// endpoint (with --tls-ca-file or the \
         context's tls.ca-file for a private CA), or pass {INSECURE} if every network in between \
         is trusted"
    )]
    Plaintext {
        what: &'static str,
        endpoint: String,
    },
}

/// Whether `sending` may go ahead: refused when a context's secret would reach an identity
/// endpoint other than the context's, or any secret would cross a network in plaintext.
pub fn check(sending: &Sending<'_>, allowed: Allowed) -> Result<(), Unsafe> {
    let Some(secret) = sending.secret else {
        return Ok(());
    };
    if let Some(context) = sending.from_context {
        if !allowed.endpoint_override && !same_endpoint(sending.identity, context.identity) {
            return Err(Unsafe::EndpointOverridden {
                context: context.name.to_owned(),
                endpoint: sending.identity.to_owned(),
                expected: context.identity.to_owned(),
            });
        }
    }
    if !allowed.insecure && plaintext_off_machine(sending.identity) {
        return Err(Unsafe::Plaintext {
            what: secret.shown(),
            endpoint: sending.identity.to_owned(),
        });
    }
    Ok(())
}

/// The warning for TLS files set while some of the `given` endpoints (where each was set,
/// and the endpoint) are `http://`, whose calls use no TLS at all; `None` when there is none.
pub fn plaintext_despite_tls(tls_set: bool, given: &[(&str, &str)]) -> Option<String> {
    if !tls_set {
        return None;
    }
    let plain: Vec<String> = given
        .iter()
        .filter(|(_, endpoint)| scheme_of(endpoint).as_deref() == Some("http"))
        .map(|(origin, endpoint)| format!("{origin} {endpoint}"))
        .collect();
    if plain.is_empty() {
        return None;
    }
    Some(format!(
        "TLS is set (--tls-*, MAILROOM_GRPC_TLS__* or the context's tls), but calls to {} are plaintext http://, without it: write https:// to use TLS",
        plain.join(", ")
    ))
}

fn scheme_of(endpoint: &str) -> Option<String> {
    let uri: Uri = endpoint.parse().ok()?;
    uri.scheme_str().map(str::to_ascii_lowercase)
}

/// Whether `endpoint` is `http://` to a host other than this machine (a loopback address or
/// `localhost`). An endpoint that is no URL is not: the channel refuses it before any call.
pub fn plaintext_off_machine(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<Uri>() else {
        return false;
    };
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    {
        return false;
    }
    !uri.host().is_some_and(is_loopback)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether two endpoints name the same place: scheme and host in any case, a default port
/// written or not, a trailing slash or not.
fn same_endpoint(a: &str, b: &str) -> bool {
    fn parts(endpoint: &str) -> Option<(String, String, u16, String)> {
        let uri: Uri = endpoint.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_owned();
        Some((scheme, host, port, path))
    }
    match (parts(a), parts(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROD: &str = "https://identity.prod.test:50051";

    fn from_prod(identity: &str) -> Sending<'_> {
        Sending {
            identity,
            secret: Some(SentSecret::ClientSecret),
            from_context: Some(CredentialContext {
                name: "prod",
                identity: PROD,
            }),
        }
    }

    #[test]
    fn a_contexts_secret_is_not_sent_to_an_identity_endpoint_that_replaced_the_contexts() {
        let leftover = "https://identity.elsewhere.test:50051";
        let err = check(&from_prod(leftover), Allowed::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("context `prod`")
                && err.contains(leftover)
                && err.contains(PROD)
                && err.contains("MAILROOM_IDENTITY_ENDPOINT")
                && err.contains(ALLOW_ENDPOINT_OVERRIDE),
            "{err}"
        );
        // The operator said so.
        let allowed = Allowed {
            endpoint_override: true,
            ..Allowed::default()
        };
        check(&from_prod(leftover), allowed).unwrap();
        // The same endpoint written another way is no override.
        check(
            &from_prod("HTTPS://Identity.Prod.test:50051/"),
            Allowed::default(),
        )
        .unwrap();
        // A secret given on the command line (not the context's) goes where it is told.
        let given = Sending {
            from_context: None,
            ..from_prod(leftover)
        };
        check(&given, Allowed::default()).unwrap();
        // No secret sent (a token as given): nothing to protect.
        let token = Sending {
            secret: None,
            ..from_prod(leftover)
        };
        check(&token, Allowed::default()).unwrap();
    }

    #[test]
    fn an_overriding_plaintext_endpoint_is_refused_even_when_overriding_is_allowed() {
        let allowed = Allowed {
            endpoint_override: true,
            insecure: false,
        };
        let err = check(&from_prod("http://10.0.0.7:50051"), allowed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("plaintext") && err.contains(INSECURE), "{err}");
        let both = Allowed {
            endpoint_override: true,
            insecure: true,
        };
        check(&from_prod("http://10.0.0.7:50051"), both).unwrap();
    }

    #[test]
    fn no_password_or_client_secret_crosses_a_network_in_plaintext_without_insecure() {
        let sending = |identity, secret| Sending {
            identity,
            secret: Some(secret),
            from_context: None,
        };
        for (identity, secret) in [
            ("http://identity.prod.test:50051", SentSecret::Password),
            ("http://identity.prod.test:50051", SentSecret::ClientSecret),
            ("http://192.168.1.20:50051", SentSecret::ClientSecret),
            ("HTTP://[2001:db8::1]:50051", SentSecret::Password),
        ] {
            let err = check(&sending(identity, secret), Allowed::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(identity) && err.contains("--insecure") && err.contains("https://"),
                "{err}"
            );
            let insecure = Allowed {
                insecure: true,
                ..Allowed::default()
            };
            check(&sending(identity, secret), insecure).unwrap();
        }
        let err = check(
            &sending("http://identity.prod.test", SentSecret::Password),
            Allowed::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("the password"), "{err}");
        // This machine, and TLS anywhere, are fine.
        for identity in [
            "http://127.0.0.1:50051",
            "http://127.8.0.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
            "https://identity.prod.test:50051",
            "https://10.0.0.7:50051",
        ] {
            check(
                &sending(identity, SentSecret::ClientSecret),
                Allowed::default(),
            )
            .unwrap_or_else(|e| panic!("{identity}: {e}"));
        }
        // A token alone is not one of these secrets.
        let token = Sending {
            identity: "http://identity.prod.test:50051",
            secret: None,
            from_context: None,
        };
        check(&token, Allowed::default()).unwrap();
    }

    #[test]
    fn tls_files_with_a_plaintext_endpoint_are_warned_about_naming_it() {
        let given = [
            ("--endpoint", "https://identity.prod.test:50051"),
            (
                "contexts.prod.endpoints.access",
                "http://access.prod.test:50052",
            ),
        ];
        let warning = plaintext_despite_tls(true, &given).unwrap();
        assert!(
            warning.contains("contexts.prod.endpoints.access http://access.prod.test:50052")
                && !warning.contains("identity"),
            "{warning}"
        );
        assert_eq!(plaintext_despite_tls(false, &given), None, "no TLS files");
        assert_eq!(plaintext_despite_tls(true, &given[..1]), None, "all https");
    }
}
