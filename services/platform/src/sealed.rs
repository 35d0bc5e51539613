//! Secrets at rest — the passwords of connected mailboxes — sealed with AES-256-GCM.
//!
//! Keys come from configuration (a Kubernetes Secret), each named: `id:base64(32 bytes)`,
//! newest first. The first seals; every one opens, so a key is rotated by putting a new one
//! first, re-sealing what [`SealingKeys::needs_reseal`] points at, then dropping the old one.
//! A sealed value names its key and carries a random nonce; it is bound to a context (the row
//! it belongs to, say), so a value copied into another row does not open there. Opened secrets
//! are [`SecretString`]s and never print.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

/// The first byte of every sealed value: its format.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no sealing key is configured; generate one with `mailroom keygen --sealing`")]
    NoKeys,
    #[error("sealing key {position} is not `id:base64-of-32-bytes`: {reason}")]
    BadKey {
        position: usize,
        reason: &'static str,
    },
    #[error("sealing key id `{0}` is given twice")]
    DuplicateId(String),
    #[error("the value was sealed with key `{0}`, which is no longer configured; put it back until every value is re-sealed")]
    UnknownKey(String),
    #[error("the sealed value is damaged, or belongs to another record")]
    Damaged,
}

/// The configured keys, newest first.
pub struct SealingKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SealingKeys").field("ids", &ids).finish()
    }
}

impl SealingKeys {
    /// Reads `id:base64` keys, newest first.
    pub fn from_config(keys: &[SecretString]) -> Result<Self, SealError> {
        let mut parsed: Vec<(String, Aes256Gcm)> = Vec::new();
        for (position, key) in keys.iter().enumerate() {
            let bad = |reason| SealError::BadKey { position, reason };
            let (id, material) = key
                .expose_secret()
                .trim()
                .split_once(':')
                .ok_or_else(|| bad("no `:` between id and key"))?;
            if id.is_empty()
                || id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("the id must be 1 to 32 letters, digits, `-` or `_`"));
            }
            let bytes = STANDARD
                .decode(material)
                .map_err(|_| bad("the key is not base64"))?;
            if bytes.len() != 32 {
                return Err(bad("the key must be 32 bytes"));
            }
            if parsed.iter().any(|(known, _)| known == id) {
                return Err(SealError::DuplicateId(id.to_owned()));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            parsed.push((id.to_owned(), cipher));
        }
        if parsed.is_empty() {
            return Err(SealError::NoKeys);
        }
        Ok(Self { keys: parsed })
    }

    /// A new key in the configured form, `id:base64`.
    pub fn generate(id: &str) -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        format!("{id}:{}", STANDARD.encode(key))
    }

    /// The id of the key that seals (the newest).
    pub fn newest_id(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    /// A secret for another purpose (signing page tokens, say) derived from the newest key:
    /// deterministic for one key and purpose, unrelated across purposes, and revealing
    /// nothing of the key. Every replica with the same keys derives the same secret.
    pub fn derive_secret(&self, purpose: &str) -> Option<Vec<u8>> {
        let (_, cipher) = self.keys.first()?;
        // AES-GCM under a fixed nonce is a pseudo-random function of the purpose here: it
        // never seals a secret, only this label, so the fixed nonce is never reused for data.
        cipher
            .encrypt(
                Nonce::from_slice(&[0u8; NONCE_LEN]),
                Payload {
                    msg: &[],
                    aad: format!("mailroom derived secret\0{purpose}").as_bytes(),
                },
            )
            .ok()
    }

    /// Seals `secret` under the newest key, bound to `context`.
    pub fn seal(&self, secret: &str, context: &[u8]) -> Result<Vec<u8>, SealError> {
        let (id, cipher) = self.keys.first().ok_or(SealError::NoKeys)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let header = header(id);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad(&header, context),
                },
            )
            .map_err(|_| SealError::Damaged)?;
        let mut out = header;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens a sealed value, which must have been sealed for `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<SecretString, SealError> {
        let (id, rest) = split_header(sealed)?;
        let cipher = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, c)| c)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        if rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Damaged);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let header_len = sealed.len() - rest.len();
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad(&sealed[..header_len], context),
                },
            )
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SealError::Damaged)
    }

    /// Whether a sealed value is under an older key than the newest (re-seal it).
    pub fn needs_reseal(&self, sealed: &[u8]) -> bool {
        match (split_header(sealed), self.keys.first()) {
            (Ok((id, _)), Some((newest, _))) => id != newest,
            _ => false,
        }
    }
}

fn header(id: &str) -> Vec<u8> {
    let mut out = vec![FORMAT_V1, id.len() as u8];
    out.extend_from_slice(id.as_bytes());
    out
}

fn split_header(sealed: &[u8]) -> Result<(&str, &[u8]), SealError> {
    match sealed {
        [FORMAT_V1, len, rest @ ..] if rest.len() >= usize::from(*len) => {
            let (id, rest) = rest.split_at(usize::from(*len));
            let id = std::str::from_utf8(id).map_err(|_| SealError::Damaged)?;
            Ok((id, rest))
        }
        _ => Err(SealError::Damaged),
    }
}

/// What the tag covers besides the secret: the header (so the key id cannot be swapped) and
/// the context (so the value cannot be moved to another record).
fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + context.len() + 1);
    out.extend_from_slice(header);
    out.push(0);
    out.extend_from_slice(context);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> SealingKeys {
        SealingKeys::from_config(
            &list
                .iter()
                .map(|k| SecretString::from(k.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_record_and_only_whole() {
        let k1 = SealingKeys::generate("k1");
        let ring = keys(&[&k1]);
        let sealed = ring.seal("imap password", b"mailbox:1").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"imap pas"), "no plaintext");
        assert_eq!(
            ring.open(&sealed, b"mailbox:1").unwrap().expose_secret(),
            "imap password"
        );
        assert_eq!(
            ring.open(&sealed, b"mailbox:2").unwrap_err(),
            SealError::Damaged
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            ring.open(&tampered, b"mailbox:1").unwrap_err(),
            SealError::Damaged
        );
        assert_eq!(
            ring.open(&[1, 200], b"mailbox:1").unwrap_err(),
            SealError::Damaged
        );
        assert_eq!(ring.open(&[], b"").unwrap_err(), SealError::Damaged);
        // Two seals of one secret differ (random nonce).
        assert_ne!(sealed, ring.seal("imap password", b"mailbox:1").unwrap());
    }

    #[test]
    fn rotation_opens_old_values_and_points_at_what_to_reseal() {
        let (k1, k2) = (SealingKeys::generate("k1"), SealingKeys::generate("k2"));
        let old = keys(&[&k1]).seal("secret", b"row").unwrap();
        let rotated = keys(&[&k2, &k1]);
        assert_eq!(
            rotated.open(&old, b"row").unwrap().expose_secret(),
            "secret"
        );
        assert!(rotated.needs_reseal(&old));
        let resealed = rotated.seal("secret", b"row").unwrap();
        assert!(!rotated.needs_reseal(&resealed));
        let dropped = keys(&[&k2]);
        assert_eq!(
            dropped.open(&old, b"row").unwrap_err(),
            SealError::UnknownKey("k1".into())
        );
        assert_eq!(
            dropped.open(&resealed, b"row").unwrap().expose_secret(),
            "secret"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason_and_never_printed() {
        for bad in ["nocolon", ":AAAA", "k1:not base64!", "k1:AAAA"] {
            assert!(matches!(
                SealingKeys::from_config(&[SecretString::from(bad.to_string())]),
                Err(SealError::BadKey { position: 0, .. })
            ));
        }
        assert_eq!(
            SealingKeys::from_config(&[]).unwrap_err(),
            SealError::NoKeys
        );
        let k = SealingKeys::generate("k1");
        assert!(matches!(
            SealingKeys::from_config(&[
                SecretString::from(k.clone()),
                SecretString::from(k.clone())
            ]),
            Err(SealError::DuplicateId(_))
        ));
        let ring = keys(&[&k]);
        let printed = format!("{ring:?}");
        assert!(printed.contains("k1") && !printed.contains(k.split_once(':').unwrap().1));
    }
}
