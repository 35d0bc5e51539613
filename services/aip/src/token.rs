//! Tamper-proof page tokens: the position after a page's last row, signed with HMAC-SHA-256
//! over the query it belongs to (caller, filter, order, organisation — whatever the service
//! says the query is).
//!
//! A token is `base64url(json position) "." base64url(tag)`. The caller cannot read anything
//! useful out of it beyond the sort values of a row it was already shown, cannot craft a
//! position (keyset values go into SQL as bound parameters, but a forged one could still
//! probe rows outside the page sequence), and cannot reuse a token with another filter, order
//! or identity: the tag would not match. Keys come from the service's configuration, so every
//! replica accepts every other's tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

use super::AipError;

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted (a hostile one is refused before it is decoded).
pub const MAX_TOKEN_LEN: usize = 2048;

/// Signs page tokens with one key, and checks them against it and any earlier keys still
/// accepted ([`PageTokenKey::accepting`]), so a key can be rotated without breaking the
/// tokens callers hold.
#[derive(Clone)]
pub struct PageTokenKey {
    key: Vec<u8>,
    previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for PageTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokenKey(…)")
    }
}

impl PageTokenKey {
    /// A key from secret bytes (at least 16 of them are sensible; any length works).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
            previous: Vec::new(),
        }
    }

    /// This key, also accepting tokens signed with `earlier` keys (while a rotation rolls
    /// out, and for as long as callers may hold such tokens). Only this key signs.
    pub fn accepting(mut self, earlier: impl IntoIterator<Item = PageTokenKey>) -> Self {
        self.previous.extend(earlier.into_iter().map(|k| k.key));
        self
    }

    /// A key derived from another secret for this one purpose, so the secret itself is never
    /// used for two things.
    pub fn derived_from(secret: &[u8], purpose: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"mailroom page tokens\0");
        mac.update(purpose.as_bytes());
        Self::new(&mac.finalize().into_bytes())
    }

    /// The key for `purpose` derived from a secret in the service's configuration, the same on
    /// every replica; `None` when that secret is empty. No key is ever made up instead: a key of
    /// one replica's own would refuse every other replica's tokens, so a service without a
    /// configured secret refuses to start.
    pub fn from_configured(secret: &[u8], purpose: &str) -> Option<Self> {
        (!secret.is_empty()).then(|| Self::derived_from(secret, purpose))
    }

    fn tag(&self, query: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(&(query.len() as u64).to_be_bytes());
        mac.update(query.as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// The token for the page after `position` in `query`.
    pub fn encode<P: Serialize>(&self, query: &str, position: &P) -> String {
        let body = serde_json::to_vec(position).unwrap_or_default();
        let tag = self.tag(query, &body);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The position in `token`, if this key signed it for `query`; an empty token is the
    /// first page (`None`).
    pub fn decode<P: DeserializeOwned>(
        &self,
        query: &str,
        token: &str,
    ) -> Result<Option<P>, AipError> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AipError::PageToken);
        }
        let (body, tag) = token.split_once('.').ok_or(AipError::PageToken)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AipError::PageToken)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| AipError::PageToken)?;
        let signed_with = |key: &[u8]| {
            let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(&(query.len() as u64).to_be_bytes());
            mac.update(query.as_bytes());
            mac.update(&body);
            // Constant-time comparison.
            mac.verify_slice(&tag).is_ok()
        };
        if !std::iter::once(&self.key)
            .chain(&self.previous)
            .any(|key| signed_with(key))
        {
            return Err(AipError::PageToken);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|_| AipError::PageToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_for_its_own_query_only() {
        let key = PageTokenKey::new(b"0123456789abcdef");
        let token = key.encode("caller|filter|order", &("ann", 42));
        assert_eq!(
            key.decode::<(String, i32)>("caller|filter|order", &token)
                .unwrap(),
            Some(("ann".to_owned(), 42))
        );
        assert_eq!(
            key.decode::<(String, i32)>("caller|other|order", &token),
            Err(AipError::PageToken)
        );
        assert_eq!(key.decode::<(String, i32)>("q", "").unwrap(), None);
    }

    #[test]
    fn a_forged_or_edited_position_is_refused() {
        let key = PageTokenKey::new(b"0123456789abcdef");
        let token = key.encode("q", &("ann", 42));
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(br#"["zed",1]"#));
        assert_eq!(
            key.decode::<(String, i32)>("q", &forged),
            Err(AipError::PageToken)
        );
        let other = PageTokenKey::new(b"another key.....");
        assert_eq!(
            other.decode::<(String, i32)>("q", &token),
            Err(AipError::PageToken)
        );
        for junk in ["x", ".", "a.b", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(
                key.decode::<(String, i32)>("q", junk),
                Err(AipError::PageToken)
            );
        }
    }

    #[test]
    fn configured_keys_agree_across_replicas_and_none_is_made_up() {
        let one = PageTokenKey::from_configured(b"shared", "sync messages").unwrap();
        let other = PageTokenKey::from_configured(b"shared", "sync messages").unwrap();
        let token = one.encode("q", &7);
        assert_eq!(other.decode::<i32>("q", &token).unwrap(), Some(7));
        assert!(PageTokenKey::from_configured(b"", "sync messages").is_none());
    }

    #[test]
    fn a_rotated_key_still_accepts_the_previous_keys_tokens_and_signs_with_the_new_one() {
        let old = PageTokenKey::derived_from(b"old secret", "sync messages");
        let new = PageTokenKey::derived_from(b"new secret", "sync messages");
        let rotated = new.clone().accepting([old.clone()]);
        let held = old.encode("q", &3);
        assert_eq!(rotated.decode::<i32>("q", &held).unwrap(), Some(3));
        let fresh = rotated.encode("q", &4);
        assert_eq!(new.decode::<i32>("q", &fresh).unwrap(), Some(4));
        assert_eq!(old.decode::<i32>("q", &fresh), Err(AipError::PageToken));
        assert_eq!(new.decode::<i32>("q", &held), Err(AipError::PageToken));
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let a = PageTokenKey::derived_from(b"secret", "mailboxes");
        let b = PageTokenKey::derived_from(b"secret", "invitations");
        let token = a.encode("q", &1);
        assert_eq!(a.decode::<i32>("q", &token).unwrap(), Some(1));
        assert_eq!(b.decode::<i32>("q", &token), Err(AipError::PageToken));
    }
}
