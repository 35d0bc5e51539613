//! `mailroom ctl`'s exit statuses: which failure a script sees, from the error a command ended
//! with. Kept small and documented in `ctl --help` ([`HELP`]) and the README.

use mailroom_clients::error::{CredentialError, PeerError};
use tonic::Code;

/// Everything went as asked.
pub const OK: u8 = 0;
/// Any other error (a refusal not listed below, a bad value, an unexpected failure).
pub const ERROR: u8 = 1;
/// The command line itself is wrong (clap exits with it itself: listed for the help).
#[allow(dead_code)]
pub const USAGE: u8 = 2;
/// `access check --fail-on-deny` was answered "denied".
pub const DENIED: u8 = 3;
/// Not signed in, a credential refused, or the caller may not do this
/// (UNAUTHENTICATED, PERMISSION_DENIED).
pub const NOT_ALLOWED: u8 = 4;
/// What the command names does not exist (NOT_FOUND).
pub const NOT_FOUND: u8 = 5;
/// A service did not answer: unreachable, UNAVAILABLE or DEADLINE_EXCEEDED (sysexits'
/// EX_UNAVAILABLE). Retrying later may help.
pub const UNAVAILABLE: u8 = 69;
/// The ctl configuration (contexts file, TLS or secret files) is unusable, or would send a
/// secret where `ctl` refuses to (sysexits' EX_CONFIG).
pub const CONFIG: u8 = 78;

/// The exit statuses as `ctl --help` lists them.
pub const HELP: &str = "\
Exit status:
  0   ok
  1   error (anything not listed below)
  2   usage: the command line is wrong
  3   denied: `access check --fail-on-deny` was answered \"denied\"
  4   not signed in, credential refused, or not permitted (UNAUTHENTICATED, PERMISSION_DENIED)
  5   not found (NOT_FOUND)
  69  a service did not answer (unreachable, UNAVAILABLE, DEADLINE_EXCEEDED)
  78  the ctl configuration is unusable (contexts file, TLS or secret files), or would send a
      secret to an overriding or plaintext identity endpoint (see --allow-endpoint-override,
      --insecure)";

/// `access check --fail-on-deny` said no: printed already, so only the status is left to give.
#[derive(Debug, thiserror::Error)]
#[error("denied")]
pub struct Denied;

/// A service's refusal as `ctl` prints it (`Code: message`), keeping the code for the status.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

impl From<tonic::Status> for Refused {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// A service that could not be reached at all (before any call was answered).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The status for a gRPC code.
fn of_code(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::Unauthenticated | Code::PermissionDenied => NOT_ALLOWED,
        Code::NotFound => NOT_FOUND,
        Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
        _ => ERROR,
    }
}

/// The status `ctl` exits with after `err`: the first error in its chain that says which.
pub fn status(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Denied>() {
            return DENIED;
        }
        if let Some(r) = cause.downcast_ref::<Refused>() {
            return of_code(r.code);
        }
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            return of_code(s.code());
        }
        if cause.is::<Unreachable>() {
            return UNAVAILABLE;
        }
        if cause.is::<super::context::ContextError>() || cause.is::<super::outbound::Unsafe>() {
            return CONFIG;
        }
        match cause.downcast_ref::<PeerError>() {
            Some(PeerError::Refused { code, .. } | PeerError::Unavailable { code, .. }) => {
                return of_code(*code)
            }
            Some(PeerError::Credential(c)) => return of_credential(c),
            Some(_) => return UNAVAILABLE,
            None => {}
        }
        if let Some(c) = cause.downcast_ref::<CredentialError>() {
            return of_credential(c);
        }
    }
    ERROR
}

fn of_credential(err: &CredentialError) -> u8 {
    match err {
        CredentialError::Unreachable { .. } => UNAVAILABLE,
        CredentialError::Refused(_) | CredentialError::NotConfigured => NOT_ALLOWED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_documented_status() {
        let refused = |code| anyhow::Error::from(Refused::from(tonic::Status::new(code, "no")));
        assert_eq!(status(&refused(Code::PermissionDenied)), NOT_ALLOWED);
        assert_eq!(status(&refused(Code::Unauthenticated)), NOT_ALLOWED);
        assert_eq!(status(&refused(Code::NotFound)), NOT_FOUND);
        assert_eq!(status(&refused(Code::Unavailable)), UNAVAILABLE);
        assert_eq!(status(&refused(Code::InvalidArgument)), ERROR);
        // Context added on the way up does not hide the code.
        let wrapped = refused(Code::NotFound).context("looking up the user");
        assert_eq!(status(&wrapped), NOT_FOUND);
        assert_eq!(status(&anyhow::Error::from(Denied)), DENIED);
        assert_eq!(
            status(&anyhow::Error::from(Unreachable("down".into()))),
            UNAVAILABLE
        );
        assert_eq!(status(&anyhow::anyhow!("something else")), ERROR);
        assert_eq!(
            status(&anyhow::Error::from(tonic::Status::not_found("x"))),
            NOT_FOUND
        );
        let unsafe_send = crate::ctl::outbound::Unsafe::Plaintext {
            what: "the password",
            endpoint: "http://identity.test".into(),
        };
        assert_eq!(status(&anyhow::Error::from(unsafe_send)), CONFIG);
        for code in [DENIED, NOT_ALLOWED, NOT_FOUND, UNAVAILABLE, CONFIG] {
            assert!(
                HELP.contains(&format!("\n  {code} ")),
                "{code} is documented"
            );
        }
        assert_eq!(OK, 0);
        assert_eq!(USAGE, 2);
    }
}
