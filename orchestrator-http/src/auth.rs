//! JWT bearer authentication: [`AuthConfig`] (which keys and claims are
//! accepted), the [`Caller`] extractor, and [`AuthConfig::mint`] for the
//! `orchestrator token` command and tests.
//!
//! The accepted algorithm is fixed by the kind of key configured — HS256
//! for a shared secret, RS256 or ES256 for a public key — and a token must
//! name exactly that algorithm. So `alg: none` is refused, and so is the
//! classic confusion of verifying an HS256 token with an RSA public key
//! used as the HMAC secret. `exp` and `sub` are required; `nbf` is checked
//! when present; `iss` and `aud` are required and checked when configured.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, AuthFailure};
use crate::state::ApiState;

/// The role that sees and manages every user's jobs.
pub const ADMIN_ROLE: &str = "admin";

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: a key of at
/// least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest accepted `sub`, in bytes: it becomes the jobs' stored owner.
const MAX_SUBJECT_BYTES: usize = 256;

/// Why an [`AuthConfig`] could not be built or a token minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// The HS256 secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes long (e.g. `openssl rand -hex 32`)")]
    WeakSecret,
    /// The public key is not a PEM key of the expected kind.
    #[error("invalid {algorithm} public key: {message}")]
    InvalidKey {
        /// `RS256` or `ES256`.
        algorithm: &'static str,
        /// What the parser said.
        message: String,
    },
    /// Tokens can only be minted with a shared secret.
    #[error("tokens can only be minted with an HS256 secret, not with a public key")]
    CannotMint,
    /// Signing failed.
    #[error("could not sign the token: {0}")]
    Signing(String),
}

/// The claims this API reads from a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user: jobs they submit are owned by this id.
    pub sub: String,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Roles; `admin` sees and manages every job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Which tokens are accepted.
#[derive(Clone)]
pub struct AuthConfig {
    algorithm: Algorithm,
    decoding: DecodingKey,
    /// Only for HS256: the same secret signs.
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

fn install_crypto() {
    // jsonwebtoken picks its crypto backend from its features; installing
    // ours explicitly keeps it working if another crate in the build also
    // enables the other backend. An error means one is installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

impl AuthConfig {
    /// HS256 with a shared secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, AuthConfigError> {
        install_crypto();
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AuthConfigError::WeakSecret);
        }
        Ok(Self::with_key(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
        ))
    }

    /// RS256 with an RSA public key in PEM.
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self, AuthConfigError> {
        install_crypto();
        let key =
            DecodingKey::from_rsa_pem(public_key).map_err(|e| AuthConfigError::InvalidKey {
                algorithm: "RS256",
                message: e.to_string(),
            })?;
        Ok(Self::with_key(Algorithm::RS256, key, None))
    }

    /// ES256 with a P-256 public key in PEM.
    pub fn es256_pem(public_key: &[u8]) -> Result<Self, AuthConfigError> {
        install_crypto();
        let key =
            DecodingKey::from_ec_pem(public_key).map_err(|e| AuthConfigError::InvalidKey {
                algorithm: "ES256",
                message: e.to_string(),
            })?;
        Ok(Self::with_key(Algorithm::ES256, key, None))
    }

    fn with_key(
        algorithm: Algorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
    ) -> Self {
        Self {
            algorithm,
            decoding,
            encoding,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }

    /// Requires tokens to carry this `iss`.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires tokens to carry this `aud`.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (30 s by default).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway_secs = leeway.as_secs();
        self
    }

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthFailure> {
        // Three non-empty base64url segments, or it is not a JWT at all.
        let parts: Vec<&str> = token.split('.').collect();
        let is_b64 = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if parts.len() != 3
            || parts[..2].iter().any(|p| p.is_empty())
            || !parts.iter().all(|p| is_b64(p))
        {
            return Err(AuthFailure::Malformed);
        }
        let mut validation = Validation::new(self.algorithm);
        validation.algorithms = vec![self.algorithm];
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        let mut required: HashSet<String> = ["exp", "sub"].map(String::from).into();
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                _ => AuthFailure::Invalid,
            },
        )?;
        let claims = data.claims;
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_SUBJECT_BYTES
            || claims.sub.chars().any(char::is_control)
        {
            return Err(AuthFailure::Invalid);
        }
        Ok(claims)
    }

    /// Mints an HS256 token for `sub` with `roles`, valid for `ttl`, with
    /// the configured issuer and audience. Only for a shared secret.
    pub fn mint(
        &self,
        sub: &str,
        roles: &[String],
        ttl: Duration,
    ) -> Result<String, AuthConfigError> {
        let key = self.encoding.as_ref().ok_or(AuthConfigError::CannotMint)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now.saturating_add(ttl.as_secs().max(1)),
            nbf: None,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            roles: roles.to_vec(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| AuthConfigError::Signing(e.to_string()))
    }
}

/// The authenticated user of a request. As an extractor it checks the
/// bearer token (401 otherwise) and then the caller's rate limit (429).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`.
    pub sub: String,
    /// Whether the token has the `admin` role.
    pub admin: bool,
}

impl Caller {
    /// The owner filter of this caller's queries: none for an admin.
    pub fn owner_filter(&self) -> Option<String> {
        (!self.admin).then(|| self.sub.clone())
    }

    /// Whether the caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || self.sub == owner
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(AuthFailure::Missing))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized(AuthFailure::Malformed))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::Unauthorized(AuthFailure::Malformed)),
        };
        let claims = state.auth().verify(token).map_err(ApiError::Unauthorized)?;
        let caller = Caller {
            admin: claims.roles.iter().any(|r| r == ADMIN_ROLE),
            sub: claims.sub,
        };
        state.check_rate(&caller.sub)?;
        tracing::debug!(user = %caller.sub, admin = caller.admin, "authenticated");
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_verify_and_carry_roles() {
        let auth = AuthConfig::hs256(SECRET)
            .unwrap()
            .issuer("me")
            .audience("api");
        let token = auth
            .mint("alice", &["admin".into()], Duration::from_secs(60))
            .unwrap();
        let claims = auth.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.roles, ["admin"]);
        // Another issuer's or audience's config refuses it.
        let other = AuthConfig::hs256(SECRET).unwrap().issuer("someone-else");
        assert_eq!(other.verify(&token), Err(AuthFailure::Invalid));
        let other = AuthConfig::hs256(SECRET).unwrap().audience("other");
        assert_eq!(other.verify(&token), Err(AuthFailure::Invalid));
    }

    #[test]
    fn weak_secrets_and_garbage_are_refused() {
        assert!(matches!(
            AuthConfig::hs256("short"),
            Err(AuthConfigError::WeakSecret)
        ));
        let auth = AuthConfig::hs256(SECRET).unwrap();
        for bad in ["", "abc", "a.b", "a.b.c.d", "a b.c.d", "..", "é.a.b"] {
            assert_eq!(auth.verify(bad), Err(AuthFailure::Malformed), "{bad:?}");
        }
        assert!(matches!(
            AuthConfig::rs256_pem(b"not a key"),
            Err(AuthConfigError::InvalidKey { .. })
        ));
    }
}
