//! Password hashing with Argon2id (the crate's defaults: 19 MiB, 2 passes), always on the
//! blocking pool so a sign-in never stalls the async workers.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::{IdentityError, Result};

pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(format!("password hashing failed: {e}")))
}

pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?
}

/// Whether `password` matches `hash`; a malformed stored hash never matches.
pub async fn verify(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|e| IdentityError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_matches_its_password_only() {
        let hash = super::hash("correct horse".into()).await.unwrap();
        assert!(super::verify("correct horse".into(), hash.clone())
            .await
            .unwrap());
        assert!(!super::verify("wrong horse".into(), hash).await.unwrap());
        assert!(!super::verify("x".into(), "not a hash".into())
            .await
            .unwrap());
    }
}
