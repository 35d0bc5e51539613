//! What a failed connection or login means to the person who typed the settings: one sorting
//! shared by every protocol and every caller, so the registry's login check and the sync
//! never disagree about whether a password was refused or a server was unreachable.

/// The kind of a failure, by what a person can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The server refused the username or password: change them, retrying will not help.
    AuthFailed,
    /// The name does not resolve or nothing answers at the address.
    Unreachable,
    /// The destination policy refuses the address (loopback, link-local, …).
    Forbidden,
    /// TLS could not be set up, or the certificate is not valid for the name.
    Tls,
    /// The server did not answer within the deadline.
    Timeout,
    /// The server answered, but not as the protocol on this port should.
    Protocol,
}
