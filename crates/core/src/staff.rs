//! Staff accounts of the web inbox: personal sign-ins per pharmacy, their sessions and the
//! sign-in throttle. Passwords are Argon2id hashes; session tokens and CSRF tokens are
//! 256-bit random values, stored as SHA-256 digests (a copy of the store signs nobody in).
//!
//! May depend on: the ports and ids of this crate; nothing of HTTP or a backend.

use crate::ids::TenantId;
use crate::ports::StoreError;
use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// What a staff member may do: admins also export and erase contacts and edit quick replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Staff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "staff" => Some(Role::Staff),
            _ => None,
        }
    }
}

/// One person's account. `email` is unique across tenants (sign-in asks for nothing else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffAccount {
    /// `st_` + 32 hex digits; what the audit log names.
    pub id: String,
    pub tenant: TenantId,
    /// Lower-cased, trimmed.
    pub email: String,
    pub role: Role,
    /// PHC string (`$argon2id$…`).
    pub password_hash: String,
    pub created_at: i64,
    /// Sessions begun before this time are no longer valid (set by a password reset).
    pub sessions_valid_after: i64,
}

/// A signed-in browser. The cookie holds the token; the store keeps its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffSession {
    /// SHA-256 of the cookie's token, hex.
    pub token_hash: String,
    pub staff_id: String,
    pub tenant: TenantId,
    /// The token every form of this session carries (compared in constant time).
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
    /// `last_seen` + the idle timeout; the session is unusable from then on.
    pub expires_at: i64,
}

/// Staff accounts, sessions and sign-in failure counters. Writes are idempotent.
#[async_trait]
pub trait StaffStore: Send + Sync {
    /// Adds an account; `false` if its email is taken (in any tenant).
    async fn add_staff(&self, account: &StaffAccount) -> Result<bool, StoreError>;
    async fn staff_by_email(&self, email: &str) -> Result<Option<StaffAccount>, StoreError>;
    async fn staff(&self, tenant: &TenantId, id: &str) -> Result<Option<StaffAccount>, StoreError>;
    /// A tenant's accounts, by email.
    async fn list_staff(&self, tenant: &TenantId) -> Result<Vec<StaffAccount>, StoreError>;
    /// Replaces an account's password hash and ends its sessions; `false` if unknown.
    async fn set_password(
        &self,
        tenant: &TenantId,
        id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Removes an account (its sessions stop working at once); `false` if unknown.
    async fn remove_staff(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError>;

    async fn create_session(&self, session: &StaffSession) -> Result<(), StoreError>;
    /// The session, unless unknown or expired at `now`.
    async fn session(&self, token_hash: &str, now: i64)
    -> Result<Option<StaffSession>, StoreError>;
    /// Moves a session's idle deadline forward.
    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError>;

    /// Counts a failed sign-in under `key` in the window `bucket`; returns the window's count.
    async fn add_sign_in_failure(
        &self,
        key: &str,
        bucket: i64,
        expires_at: i64,
    ) -> Result<u32, StoreError>;
    async fn sign_in_failures(&self, key: &str, bucket: i64) -> Result<u32, StoreError>;
}

/// How an email is compared and stored.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A plausible email address: one `@`, something on both sides, no spaces, ≤ 254 bytes.
pub fn valid_email(email: &str) -> bool {
    let e = email.trim();
    let mut parts = e.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None)
        if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Shortest password accepted (NIST SP 800-63B: at least 8; a pharmacy's shared counter
/// browser makes 12 the sensible floor).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password has fewer than {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("hashing failed: {0}")]
    Hash(String),
}

fn argon2() -> argon2::Argon2<'static> {
    // Argon2id, m = 19 MiB, t = 2, p = 1: OWASP's first recommended setting.
    argon2::Argon2::default()
}

/// An Argon2id hash (PHC string) of a new password, after the length rules.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified against when the email is unknown so that an unknown
/// email costs the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).expect("the OS random source works");
        hash_password(&hex::encode(random)).expect("hashing a random password works")
    })
}

/// A new random token (256 bits, URL-safe base64) and its stored digest.
pub fn new_token() -> (String, String) {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the OS random source works");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let digest = token_digest(&token);
    (token, digest)
}

/// A new random password: 16 characters of URL-safe base64 (96 bits).
pub fn generate_password() -> String {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The stored form of a session token.
pub fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new staff id: `st_` + 32 hex digits.
pub fn new_staff_id() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("the OS random source works");
    format!("st_{}", hex::encode(raw))
}

/// The sign-in throttle: `MAX_FAILURES` failed sign-ins of one account, or from one address,
/// within a window lock it for the rest of that window and the next (15 to 30 minutes).
pub mod throttle {
    /// Failures that lock.
    pub const MAX_FAILURES: u32 = 10;
    /// The window, in seconds.
    pub const WINDOW_SECS: i64 = 15 * 60;

    pub fn bucket(now: i64) -> i64 {
        now.div_euclid(WINDOW_SECS)
    }

    /// When a counter of `bucket` may be deleted.
    pub fn expires_at(bucket: i64) -> i64 {
        (bucket + 2) * WINDOW_SECS
    }

    /// The counter key of an account (by its normalized email, hashed: no address in the
    /// store's keys) and of a client address.
    pub fn account_key(email: &str) -> String {
        format!(
            "acct:{}",
            &super::token_digest(&super::normalize_email(email))[..32]
        )
    }

    pub fn address_key(address: &str) -> String {
        format!("addr:{}", &super::token_digest(address)[..32])
    }

    /// Locked when this window's and the last window's failures reach the limit.
    pub fn locked(current: u32, previous: u32) -> bool {
        current.saturating_add(previous) >= MAX_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("korrekt-pferd-batterie").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("korrekt-pferd-batterie", &h));
        assert!(!verify_password("korrekt-pferd-batteriE", &h));
        assert!(!verify_password("korrekt-pferd-batterie", "not a hash"));
        assert!(!verify_password("anything-long-enough", decoy_hash()));
        assert_eq!(hash_password("short"), Err(PasswordError::TooShort));
        assert_eq!(
            hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn emails_are_checked_and_normalized() {
        assert!(valid_email("anna@apotheke.example"));
        assert!(!valid_email("anna"));
        assert!(!valid_email("anna@localhost"));
        assert!(!valid_email("a b@apotheke.example"));
        assert!(!valid_email("a@b@apotheke.example"));
        assert_eq!(
            normalize_email("  Anna@Apotheke.Example "),
            "anna@apotheke.example"
        );
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let (a, da) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_digest(&a), da);
        assert_ne!(da, a);
        assert!(new_staff_id().starts_with("st_"));
    }

    #[test]
    fn the_throttle_locks_at_ten_over_two_windows() {
        assert!(!throttle::locked(9, 0));
        assert!(throttle::locked(10, 0));
        assert!(throttle::locked(4, 6));
        assert_eq!(throttle::bucket(899), 0);
        assert_eq!(throttle::bucket(900), 1);
        assert_ne!(
            throttle::account_key("anna@apotheke.example"),
            throttle::address_key("anna@apotheke.example")
        );
        assert_eq!(
            throttle::account_key(" ANNA@apotheke.example"),
            throttle::account_key("anna@apotheke.example")
        );
    }
}
