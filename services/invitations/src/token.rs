//! The secrets in invitation and registration links: 32 random bytes, written base64url, of
//! which only the SHA-256 is stored. A database leak gives no working link; a link's lookup is by
//! its hash, and the stored hash is compared again in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly made link secret: what goes into the link, and what is stored.
pub struct NewToken {
    pub secret: String,
    pub hash: Vec<u8>,
}

pub fn generate() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&secret);
    NewToken { secret, hash }
}

/// The stored form of a secret someone presents.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.trim().as_bytes()).to_vec()
}

/// Whether a presented secret is a well-formed link secret at all (43 base64url characters):
/// anything else is refused without a query.
pub fn well_formed(secret: &str) -> bool {
    let s = secret.trim();
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Constant-time equality of two stored hashes.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_only_their_hash_matches() {
        let t = generate();
        assert!(well_formed(&t.secret));
        assert_eq!(URL_SAFE_NO_PAD.decode(&t.secret).unwrap().len(), 32);
        assert!(same(&hash(&t.secret), &t.hash));
        assert!(!same(&hash(&generate().secret), &t.hash));
        assert_ne!(generate().secret, t.secret);
    }

    #[test]
    fn junk_is_not_well_formed() {
        assert!(!well_formed("abc"));
        assert!(!well_formed(&"a".repeat(42)));
        assert!(!well_formed(&format!("{}!", "a".repeat(42))));
    }
}
