//! Signing access tokens and publishing the keys that verify them.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mailroom_platform::auth::{Claims, AUDIENCE, ISSUER};
use mailroom_platform::proto::identity::v1::{Jwk, Jwks};
use mailroom_platform::types::OrgId;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

struct Key {
    kid: String,
    encoding: EncodingKey,
    public_x: String,
}

/// The deployment's signing keys: the first signs, every one is published.
pub struct KeyRing {
    keys: Vec<Key>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no signing key configured: set MAILROOM_IDENTITY__SIGNING_KEYS (base64 32-byte Ed25519 seeds; `mailroom keygen` makes one)")]
    None,
    #[error("signing key #{index} is not a base64 32-byte Ed25519 seed")]
    Malformed { index: usize },
    #[error("token could not be signed: {0}")]
    Sign(String),
}

impl KeyRing {
    pub fn from_seeds(seeds: &[SecretString]) -> Result<Self, KeyError> {
        if seeds.is_empty() {
            return Err(KeyError::None);
        }
        let keys = seeds
            .iter()
            .enumerate()
            .map(|(index, seed)| {
                let bytes = STANDARD
                    .decode(seed.expose_secret().trim())
                    .map_err(|_| KeyError::Malformed { index })?;
                let seed: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KeyError::Malformed { index })?;
                let signing = SigningKey::from_bytes(&seed);
                let der = signing
                    .to_pkcs8_der()
                    .map_err(|_| KeyError::Malformed { index })?;
                let public = signing.verifying_key().to_bytes();
                let kid = hex::encode(&Sha256::digest(public)[..8]);
                Ok(Key {
                    kid,
                    encoding: EncodingKey::from_ed_der(der.as_bytes()),
                    public_x: URL_SAFE_NO_PAD.encode(public),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// A fresh random seed, base64, for `mailroom keygen` and the dev stack.
    pub fn generate_seed() -> String {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        STANDARD.encode(signing.to_bytes())
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let key = self.keys.first().ok_or(KeyError::None)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    pub fn jwks(&self) -> Jwks {
        let keys: Vec<Jwk> = self
            .keys
            .iter()
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.public_x.clone(),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        let json = serde_json::json!({
            "keys": keys.iter().map(|k| serde_json::json!({
                "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.r#use,
            })).collect::<Vec<_>>()
        })
        .to_string();
        Jwks { keys, json }
    }
}

/// Claims for a token issued now: of a user of `org`, or (no organisation) of a service.
pub fn claims(sub: String, org: Option<OrgId>, admin: bool, ttl_secs: i64) -> Claims {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now = now_ms.div_euclid(1000);
    Claims {
        sub,
        org: org.map(OrgId::into_uuid),
        admin,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now,
        exp: now + ttl_secs,
        jti: uuid::Uuid::new_v4().to_string(),
        iat_ms: Some(now_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_platform::auth::TokenVerifier;

    #[tokio::test]
    async fn tokens_verify_against_the_published_keys_only() {
        let ring = KeyRing::from_seeds(&[KeyRing::generate_seed().into()]).unwrap();
        let token = ring
            .sign(&claims(
                uuid::Uuid::new_v4().to_string(),
                Some(OrgId::new()),
                true,
                60,
            ))
            .unwrap();
        let verifier = TokenVerifier::from_jwks(&ring.jwks().keys).unwrap();
        assert!(verifier.verify(&token).await.unwrap().admin);

        let other = KeyRing::from_seeds(&[KeyRing::generate_seed().into()]).unwrap();
        let stranger = TokenVerifier::from_jwks(&other.jwks().keys).unwrap();
        assert!(stranger.verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let ring = KeyRing::from_seeds(&[KeyRing::generate_seed().into()]).unwrap();
        let token = ring
            .sign(&claims("service:x".into(), None, false, -60))
            .unwrap();
        let verifier = TokenVerifier::from_jwks(&ring.jwks().keys).unwrap();
        assert_eq!(
            verifier.verify(&token).await,
            Err(mailroom_platform::auth::AuthError::Expired)
        );
    }

    #[test]
    fn malformed_seeds_are_refused() {
        assert!(KeyRing::from_seeds(&["not base64!".to_string().into()]).is_err());
        assert!(KeyRing::from_seeds(&[STANDARD.encode([1u8; 16]).into()]).is_err());
        assert!(KeyRing::from_seeds(&[]).is_err());
    }
}
