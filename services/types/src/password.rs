//! The password rule every part shows and checks alike: a length, counted in characters
//! (NIST 800-63B: no composition rules). Identity enforces it; the console shows it beside
//! the field and checks it before a form is sent.

/// What a new password must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy;

impl PasswordPolicy {
    /// The fewest characters a password may have.
    pub const MIN: usize = 8;
    /// The most characters a password may have.
    pub const MAX: usize = 256;

    /// Whether `password`'s length (in characters) is allowed.
    pub fn allows(password: &str) -> bool {
        (Self::MIN..=Self::MAX).contains(&password.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(!PasswordPolicy::allows("short"));
        assert!(PasswordPolicy::allows("пароль12"));
        assert!(PasswordPolicy::allows(&"x".repeat(PasswordPolicy::MAX)));
        assert!(!PasswordPolicy::allows(
            &"x".repeat(PasswordPolicy::MAX + 1)
        ));
    }
}
