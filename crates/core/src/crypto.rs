//! Envelope encryption of personal data, with one data key per contact (crypto-shredding).
//!
//! Every piece of personal data the relay writes anywhere (table, queue, SQLite file) is a
//! *sealed* string: AES-256-GCM under a 256-bit data key, with the tenant, the key's name
//! (`keyref`), its generation (`key_id`) and the field's purpose bound in as associated data,
//! so a sealed value cannot be moved to another contact, tenant or field.
//!
//! ```text
//! s1.{keyref}.{key_id}.{base64url(nonce ‖ ciphertext ‖ tag)}
//! ```
//!
//! Data keys are generated and wrapped by a [`KeyWrapper`] (KMS `GenerateDataKey` on AWS, a
//! local master key file in local mode) and kept wrapped in a [`KeyStore`]. The keys of a
//! contact are named by its contact id; erasing the contact deletes that one item, after which
//! every copy of its data — backups, dead-letter messages, anything missed — is unreadable.
//! Queue messages are sealed under a per-tenant *transit* key per UTC day, deleted (by TTL) a
//! day after the longest a queue keeps a message.
//!
//! A [`Keyring`] caches unwrapped keys by generation (bounded, 15 minutes), so a warm function
//! calls KMS once per contact, not once per message. The *current* generation of a contact
//! key is always read from the key store (one consistent read), so nothing is ever written
//! under a key that erasure has destroyed.

use crate::Clock;
use crate::ids::{ContactId, TenantId};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretBox};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod keyring;
mod local;
pub use keyring::Keyring;
pub use local::{LocalKeyWrapper, MemoryKeyStore};

pub const SEALED_PREFIX: &str = "s1.";
/// How long an unwrapped key stays in memory without being used from the key store again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(15 * 60);
pub const KEY_CACHE_ENTRIES: usize = 4096;
/// A transit key outlives its day by the longest an SQS queue keeps a message (14 days) + 1.
pub const TRANSIT_KEY_EXTRA_SECS: i64 = 15 * 86_400;

/// A 256-bit data key in memory (zeroised on drop, never printed).
pub struct DataKey(SecretBox<[u8; 32]>);

impl DataKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        DataKey(SecretBox::new(Box::new(bytes)))
    }

    pub fn random() -> Result<Self, CryptoError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
        Ok(DataKey::new(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let k: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Malformed)?;
        Ok(DataKey::new(k))
    }

    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// A data key as the key store keeps it: wrapped by the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_id: String,
    pub wrapped: Vec<u8>,
    /// When the key store may delete it on its own (`None`: never).
    pub expires_at: Option<i64>,
}

/// What a data key is bound to; the wrapper binds it into the wrapping (KMS encryption
/// context), so a wrapped key cannot be replayed under another name.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    pub tenant: &'a TenantId,
    pub keyref: &'a str,
    pub key_id: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key store or KMS could not be reached; a retry may succeed.
    #[error("key service unavailable: {0}")]
    Unavailable(String),
    /// The key was destroyed (erasure) or has expired: the data is gone for good.
    #[error("the data key was destroyed")]
    Destroyed,
    #[error("sealed value is malformed")]
    Malformed,
    /// Authentication failed: wrong key, wrong context, or tampered data.
    #[error("sealed value does not authenticate")]
    Forged,
}

/// Where wrapped data keys live. Adapters: a DynamoDB table without backups (AWS), a SQLite
/// table (local).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The current generation of `keyref` (a strongly consistent read); a key expired at
    /// `now` counts as gone (its deletion may lag).
    async fn load(
        &self,
        tenant: &TenantId,
        keyref: &str,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError>;
    /// Stores `key` unless `keyref` has one already that has not expired at `now`; returns
    /// the one that is there then.
    async fn insert(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key: &WrappedKey,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError>;
    /// Moves the key's own expiry later (only if `key_id` is still the current generation).
    async fn extend(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), CryptoError>;
    /// Destroys the key; true if there was one.
    async fn delete(&self, tenant: &TenantId, keyref: &str) -> Result<bool, CryptoError>;
}

/// Generates and unwraps data keys under the deployment's master key.
#[async_trait]
pub trait KeyWrapper: Send + Sync {
    async fn generate(&self, context: KeyContext<'_>) -> Result<(DataKey, Vec<u8>), CryptoError>;
    async fn unwrap(&self, context: KeyContext<'_>, wrapped: &[u8])
    -> Result<DataKey, CryptoError>;
}

/// The key name of a contact's data.
pub fn contact_keyref(contact: &ContactId) -> &str {
    contact.as_str()
}

/// The key name of a tenant's queue messages on the UTC day of `now`.
pub fn transit_keyref(now: i64) -> String {
    format!("transit-{}", now.div_euclid(86_400))
}

/// Keys of data that belongs to no contact (other webhook events, quarantined events).
pub const EVENTS_KEYREF: &str = "events";

fn aad(tenant: &TenantId, keyref: &str, key_id: &str, purpose: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for part in ["relay/s1", tenant.as_str(), keyref, key_id, purpose] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// One key generation, ready to seal.
#[derive(Clone)]
pub struct Sealer {
    tenant: TenantId,
    keyref: String,
    key_id: String,
    key: Arc<DataKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("tenant", &self.tenant)
            .field("keyref", &self.keyref)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn keyref(&self) -> &str {
        &self.keyref
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The associated data of values sealed for `purpose` and `name` under this key.
    pub fn context(&self, purpose: &str, name: &str) -> Vec<u8> {
        let mut c = aad(&self.tenant, &self.keyref, &self.key_id, purpose);
        c.extend_from_slice(&(name.len() as u32).to_be_bytes());
        c.extend_from_slice(name.as_bytes());
        c
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plaintext` with the given associated data (file chunks).
    pub fn seal_raw(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(self.key.expose().into());
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encrypts any input below 64 GiB");
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let cipher = Aes256Gcm::new(self.key.expose().into());
        let mut nonce = [0u8; 12];
        // The OS random source failing is not recoverable in any useful way.
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let aad = aad(&self.tenant, &self.keyref, &self.key_id, purpose);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any input below 64 GiB");
        let mut blob = Vec::with_capacity(12 + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        format!(
            "{SEALED_PREFIX}{}.{}.{}",
            self.keyref,
            self.key_id,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    pub fn seal_str(&self, purpose: &str, plaintext: &str) -> String {
        self.seal(purpose, plaintext.as_bytes())
    }
}

/// Opens `nonce ‖ ciphertext ‖ tag` from [`Sealer::seal_raw`].
pub fn open_raw(key: &DataKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < 12 + 16 {
        return Err(CryptoError::Malformed);
    }
    let (nonce, ct) = sealed.split_at(12);
    Aes256Gcm::new(key.expose().into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Forged)
}

/// The parts of a sealed value.
struct Parsed<'a> {
    keyref: &'a str,
    key_id: &'a str,
    blob: Vec<u8>,
}

fn parse(sealed: &str) -> Result<Parsed<'_>, CryptoError> {
    let rest = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or(CryptoError::Malformed)?;
    let mut parts = rest.splitn(3, '.');
    let (Some(keyref), Some(key_id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CryptoError::Malformed);
    };
    let blob = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| CryptoError::Malformed)?;
    if keyref.is_empty() || key_id.is_empty() || blob.len() < 12 + 16 {
        return Err(CryptoError::Malformed);
    }
    Ok(Parsed {
        keyref,
        key_id,
        blob,
    })
}

/// True if `s` looks like a sealed value (it may still fail to open).
pub fn is_sealed(s: &str) -> bool {
    s.starts_with(SEALED_PREFIX)
}

/// The key name a sealed value was sealed under.
pub fn sealed_keyref(sealed: &str) -> Option<&str> {
    parse(sealed).ok().map(|p| p.keyref)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The in-memory store never awaits anything that is not ready.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn sealed_values_round_trip_and_hide_the_plaintext() {
        block_on(async {
            let ring = Keyring::in_memory(Clock::fixed(0));
            let s = ring.sealer(&t("a"), "c_1", Some(100)).await.unwrap();
            let sealed = s.seal_str("text", "Ibuprofen 400 für Frau Müller");
            assert!(is_sealed(&sealed));
            assert!(!sealed.contains("Ibuprofen"));
            assert_eq!(sealed_keyref(&sealed), Some("c_1"));
            assert_eq!(
                ring.open_string(&t("a"), "text", &sealed).await.unwrap(),
                "Ibuprofen 400 für Frau Müller"
            );
            // Two seals of the same text differ (random nonce).
            assert_ne!(sealed, s.seal_str("text", "Ibuprofen 400 für Frau Müller"));
        });
    }

    #[test]
    fn the_recent_sealer_is_a_guess_that_is_checked() {
        block_on(async {
            let store = Arc::new(MemoryKeyStore::default());
            let wrapper = Arc::new(LocalKeyWrapper::new([9; 32]));
            let here = Keyring::new(store.clone(), wrapper.clone(), Clock::fixed(0));
            let elsewhere = Keyring::new(store, wrapper, Clock::fixed(0));
            assert!(here.recent_sealer(&t("a"), "c_1", Some(100)).is_none());
            let s = here.sealer(&t("a"), "c_1", Some(100)).await.unwrap();
            let recent = here.recent_sealer(&t("a"), "c_1", Some(100)).unwrap();
            assert_eq!(recent.key_id(), s.key_id());
            // The key was made to live until 100 + a day: a need beyond that reads again.
            assert!(
                here.recent_sealer(&t("a"), "c_1", Some(100 + 86_400))
                    .is_some()
            );
            assert!(
                here.recent_sealer(&t("a"), "c_1", Some(100 + 86_401))
                    .is_none()
            );
            assert!(here.is_current(&recent).await.unwrap());
            // Destroyed by another instance: the guess is wrong, found so, and forgotten.
            assert!(elsewhere.destroy(&t("a"), "c_1").await.unwrap());
            assert!(here.recent_sealer(&t("a"), "c_1", Some(100)).is_some());
            assert!(!here.is_current(&recent).await.unwrap());
            assert!(here.recent_sealer(&t("a"), "c_1", Some(100)).is_none());
            // Destroyed here: forgotten at once.
            here.sealer(&t("a"), "c_2", None).await.unwrap();
            here.destroy(&t("a"), "c_2").await.unwrap();
            assert!(here.recent_sealer(&t("a"), "c_2", None).is_none());
        });
    }

    #[test]
    fn a_value_cannot_move_to_another_purpose_or_tenant_or_be_altered() {
        block_on(async {
            let ring = Keyring::in_memory(Clock::fixed(0));
            let s = ring.sealer(&t("a"), "c_1", None).await.unwrap();
            let sealed = s.seal_str("name", "Erika");
            assert!(matches!(
                ring.open(&t("a"), "text", &sealed).await,
                Err(CryptoError::Forged)
            ));
            // The other tenant has no such key at all.
            assert!(ring.open(&t("b"), "name", &sealed).await.is_err());
            let mut tampered = sealed.clone().into_bytes();
            let last = tampered.len() - 2;
            tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(ring.open(&t("a"), "name", &tampered).await.is_err());
            for junk in ["", "s1.", "s1.a.b.", "s1.a.b.!!!", "plain text"] {
                assert!(matches!(
                    ring.open(&t("a"), "name", junk).await,
                    Err(CryptoError::Malformed)
                ));
            }
        });
    }

    #[test]
    fn destroying_a_key_shreds_every_copy_and_a_new_key_starts_afresh() {
        block_on(async {
            let store = Arc::new(MemoryKeyStore::default());
            let wrapper = Arc::new(LocalKeyWrapper::new([1; 32]));
            let ring = Keyring::new(store.clone(), wrapper.clone(), Clock::fixed(0));
            let s = ring.sealer(&t("a"), "c_1", None).await.unwrap();
            let copy = s.seal_str("text", "Rezept");
            assert!(ring.destroy(&t("a"), "c_1").await.unwrap());
            assert!(!ring.destroy(&t("a"), "c_1").await.unwrap(), "idempotent");
            assert!(matches!(
                ring.open(&t("a"), "text", &copy).await,
                Err(CryptoError::Destroyed)
            ));
            // Another instance (fresh cache, same stores) cannot open it either.
            let other = Keyring::new(store.clone(), wrapper.clone(), Clock::fixed(0));
            assert!(other.open(&t("a"), "text", &copy).await.is_err());
            // An instance that cached the key before: `open` still may (bounded by the cache
            // TTL), `open_current` may not.
            let warm = Keyring::new(store.clone(), wrapper.clone(), Clock::fixed(0));
            let c2 = warm
                .sealer(&t("a"), "c_2", None)
                .await
                .unwrap()
                .seal_str("text", "x");
            assert!(ring.destroy(&t("a"), "c_2").await.unwrap());
            assert!(warm.open(&t("a"), "text", &c2).await.is_ok());
            assert!(matches!(
                warm.open_current(&t("a"), "text", &c2).await,
                Err(CryptoError::Destroyed)
            ));
            // The next write creates a new generation; the old copy stays unreadable.
            let s2 = ring.sealer(&t("a"), "c_1", None).await.unwrap();
            assert_ne!(s2.key_id, s.key_id);
            assert!(ring.open(&t("a"), "text", &copy).await.is_err());
        });
    }

    #[test]
    fn another_instance_opens_with_the_wrapped_key_and_a_wrong_master_cannot() {
        block_on(async {
            let store = Arc::new(MemoryKeyStore::default());
            let ring = Keyring::new(
                store.clone(),
                Arc::new(LocalKeyWrapper::new([1; 32])),
                Clock::fixed(0),
            );
            let sealed = ring
                .sealer(&t("a"), "c_1", None)
                .await
                .unwrap()
                .seal_str("text", "x");
            let same = Keyring::new(
                store.clone(),
                Arc::new(LocalKeyWrapper::new([1; 32])),
                Clock::fixed(0),
            );
            assert_eq!(same.open(&t("a"), "text", &sealed).await.unwrap(), b"x");
            let wrong = Keyring::new(
                store,
                Arc::new(LocalKeyWrapper::new([2; 32])),
                Clock::fixed(0),
            );
            assert!(matches!(
                wrong.open(&t("a"), "text", &sealed).await,
                Err(CryptoError::Forged)
            ));
        });
    }

    #[test]
    fn key_expiry_follows_the_data() {
        block_on(async {
            let store = Arc::new(MemoryKeyStore::default());
            let ring = Keyring::new(
                store.clone(),
                Arc::new(LocalKeyWrapper::new([1; 32])),
                Clock::fixed(0),
            );
            ring.sealer(&t("a"), "c_1", Some(1_000)).await.unwrap();
            let first = store.load(&t("a"), "c_1", 0).await.unwrap().unwrap();
            assert_eq!(first.expires_at, Some(1_000 + 86_400));
            ring.sealer(&t("a"), "c_1", Some(500_000)).await.unwrap();
            let later = store.load(&t("a"), "c_1", 0).await.unwrap().unwrap();
            assert_eq!(later.expires_at, Some(500_000 + 86_400));
            assert_eq!(later.key_id, first.key_id);
        });
    }

    #[test]
    fn a_key_expired_on_the_keyrings_clock_is_gone_and_replaced() {
        block_on(async {
            let store = Arc::new(MemoryKeyStore::default());
            let wrapper = Arc::new(LocalKeyWrapper::new([1; 32]));
            let early = Keyring::new(store.clone(), wrapper.clone(), Clock::fixed(0));
            let first = early.sealer(&t("a"), "c_1", Some(1_000)).await.unwrap();
            let sealed = first.seal_str("text", "x");
            // The key lives until 1,000 + a day; read on a clock past that, it is gone.
            let late = Keyring::new(store.clone(), wrapper, Clock::fixed(1_000 + 86_400));
            assert!(late.open(&t("a"), "text", &sealed).await.is_err());
            let again = late.sealer(&t("a"), "c_1", Some(200_000)).await.unwrap();
            assert_ne!(again.key_id, first.key_id, "an expired key is replaced");
            let stored = store.load(&t("a"), "c_1", 1_000 + 86_400).await.unwrap();
            assert_eq!(stored.map(|w| w.key_id), Some(again.key_id));
        });
    }

    #[test]
    fn transit_keys_are_per_day_and_outlive_the_queue() {
        block_on(async {
            let store = Arc::new(MemoryKeyStore::default());
            let ring = Keyring::new(
                store.clone(),
                Arc::new(LocalKeyWrapper::new([1; 32])),
                Clock::fixed(0),
            );
            let day = 20_000 * 86_400;
            let a = ring.transit_sealer(&t("a"), day + 10).await.unwrap();
            let b = ring.transit_sealer(&t("a"), day + 80_000).await.unwrap();
            let c = ring.transit_sealer(&t("a"), day + 86_400).await.unwrap();
            assert_eq!(a.keyref(), b.keyref());
            assert_ne!(a.keyref(), c.keyref());
            let w = store.load(&t("a"), a.keyref(), 0).await.unwrap().unwrap();
            assert_eq!(w.expires_at, Some(day + 86_400 + TRANSIT_KEY_EXTRA_SECS));
        });
    }
}
