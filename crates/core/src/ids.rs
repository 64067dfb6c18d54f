//! Identifiers and the pseudonymisation that keeps phone numbers out of keys and logs.
//!
//! WhatsApp's own ids are personal data: `wa_id` is a phone number, a BSUID names a user, and a
//! `wamid` is base64 that embeds the sender's number. Everything the relay uses as a key or
//! writes to a log is therefore a keyed hash (HMAC-SHA256 with a per-deployment secret, scoped
//! by tenant so that the same person is unlinkable across pharmacies).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A pharmacy. Lowercase letters, digits and `-`, 1–64 characters.
    TenantId
);
string_id!(
    /// The pseudonymous id of a WhatsApp user within one tenant: `c_` + 32 hex digits.
    ContactId
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidId(&'static str);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(InvalidId(
                "tenant id must be 1-64 characters of a-z, 0-9 and '-', not starting with '-'",
            ))
        }
    }
}

impl TenantId {
    /// The owner of data that belongs to no tenant (quarantined events). Not a valid tenant
    /// id, so it cannot collide with one.
    pub fn system() -> Self {
        TenantId("_system".to_owned())
    }
}

impl ContactId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = s.len() == 34
            && s.starts_with("c_")
            && s[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(ContactId(s.to_owned()))
        } else {
            Err(InvalidId(
                "contact id must be 'c_' followed by 32 lowercase hex digits",
            ))
        }
    }
}

/// How a WhatsApp user is identified in a payload. The BSUID wins when both are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    Bsuid(&'a str),
    WaId(&'a str),
}

/// Keyed hashing of personal identifiers. Cheap to clone is not needed: share by `Arc`.
pub struct Pseudonymizer {
    key: SecretBox<[u8; 32]>,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer([redacted])")
    }
}

impl Pseudonymizer {
    pub fn new(key: [u8; 32]) -> Self {
        Pseudonymizer {
            key: SecretBox::new(Box::new(key)),
        }
    }

    fn mac(&self, tenant: &TenantId, domain: &str, value: &str) -> [u8; 32] {
        // A key of any length is valid for HMAC, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose_secret())
            .expect("HMAC takes any key length");
        for part in [tenant.as_str(), domain, value] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn hex128(&self, tenant: &TenantId, domain: &str, value: &str) -> String {
        hex::encode(&self.mac(tenant, domain, value)[..16])
    }

    /// The lookup key of one identity (alias) of a contact.
    pub fn identity_key(&self, tenant: &TenantId, identity: Identity<'_>) -> String {
        match identity {
            Identity::Bsuid(v) => self.hex128(tenant, "bsuid", v),
            Identity::WaId(v) => self.hex128(tenant, "wa_id", &normalize_wa_id(v)),
        }
    }

    /// The contact id a new contact gets from its primary identity.
    pub fn contact_id(&self, tenant: &TenantId, identity: Identity<'_>) -> ContactId {
        ContactId(format!("c_{}", self.identity_key(tenant, identity)))
    }

    /// A stable key derived from a value for a purpose (deterministic ids of auto-replies).
    pub fn derived_key(&self, tenant: &TenantId, purpose: &str, value: &str) -> String {
        self.hex128(tenant, purpose, value)
    }

    /// The key under which a wamid is stored and logged.
    pub fn wamid_key(&self, tenant: &TenantId, wamid: &str) -> String {
        self.hex128(tenant, "wamid", wamid)
    }
}

/// `wa_id`s are digits only, but a `+` or spaces sneak in when people type them.
pub fn normalize_wa_id(v: &str) -> String {
    v.chars().filter(char::is_ascii_digit).collect()
}

/// SHA-256 of a high-entropy secret (API key, webhook token): safe to store and compare.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A content digest for de-duplicating events that have no id of their own.
pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn tenant_ids_are_validated() {
        assert!(TenantId::parse("demo-apotheke").is_ok());
        for bad in ["", "Demo", "a b", "-x", "a/b", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn contact_ids_are_keyed_scoped_and_contain_no_number() {
        let p = Pseudonymizer::new([7; 32]);
        let a = p.contact_id(&t("a"), Identity::WaId("4915112345678"));
        assert_eq!(a, p.contact_id(&t("a"), Identity::WaId("+49 151 12345678")));
        assert_ne!(a, p.contact_id(&t("b"), Identity::WaId("4915112345678")));
        assert_ne!(
            a,
            Pseudonymizer::new([8; 32]).contact_id(&t("a"), Identity::WaId("4915112345678"))
        );
        assert_ne!(a, p.contact_id(&t("a"), Identity::Bsuid("4915112345678")));
        assert!(!a.as_str().contains("12345678"));
        assert!(ContactId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn contact_id_parse_refuses_junk() {
        for bad in [
            "",
            "c_",
            "c_../../etc",
            "x_0123456789abcdef0123456789abcdef",
            "c_0123456789ABCDEF0123456789abcdef",
        ] {
            assert!(ContactId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let p = Pseudonymizer::new([0x41; 32]);
        assert_eq!(format!("{p:?}"), "Pseudonymizer([redacted])");
    }
}
