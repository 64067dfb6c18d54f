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

type CacheKey = (TenantId, String, String);

/// Data keys: creation, cached unwrapping, sealing, opening and destruction.
pub struct Keyring {
    store: Arc<dyn KeyStore>,
    wrapper: Arc<dyn KeyWrapper>,
    cache: Mutex<lru::LruCache<CacheKey, (Arc<DataKey>, Instant)>>,
    /// Current transit key per (tenant, keyref): transit keys are never destroyed early.
    transit: Mutex<lru::LruCache<(TenantId, String), Sealer>>,
    /// Key expiry is judged on this clock; it is also the clock of everything built on the
    /// keyring (the router, sealed queues), so one composition has one "now".
    clock: Clock,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring")
    }
}

fn new_key_id() -> Result<String, CryptoError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
    Ok(hex::encode(b))
}

impl Keyring {
    pub fn new(store: Arc<dyn KeyStore>, wrapper: Arc<dyn KeyWrapper>, clock: Clock) -> Self {
        let n = NonZeroUsize::new(KEY_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Keyring {
            store,
            wrapper,
            cache: Mutex::new(lru::LruCache::new(n)),
            transit: Mutex::new(lru::LruCache::new(n)),
            clock,
        }
    }

    /// The clock this keyring judges expiry on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn cached(&self, k: &CacheKey) -> Option<Arc<DataKey>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(k) {
            Some((key, at)) if at.elapsed() < KEY_CACHE_TTL => Some(key.clone()),
            Some(_) => {
                cache.pop(k);
                None
            }
            None => None,
        }
    }

    fn remember(&self, k: CacheKey, key: Arc<DataKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(k, (key, Instant::now()));
    }

    async fn unwrap(
        &self,
        tenant: &TenantId,
        keyref: &str,
        w: &WrappedKey,
    ) -> Result<Arc<DataKey>, CryptoError> {
        let ck = (tenant.clone(), keyref.to_owned(), w.key_id.clone());
        if let Some(k) = self.cached(&ck) {
            return Ok(k);
        }
        let ctx = KeyContext {
            tenant,
            keyref,
            key_id: &w.key_id,
        };
        let key = Arc::new(self.wrapper.unwrap(ctx, &w.wrapped).await?);
        self.remember(ck, key.clone());
        Ok(key)
    }

    /// The current key of `keyref`, created if there is none; its own expiry is moved to at
    /// least `expires_at` (a key lives as long as the data sealed under it).
    pub async fn sealer(
        &self,
        tenant: &TenantId,
        keyref: &str,
        expires_at: Option<i64>,
    ) -> Result<Sealer, CryptoError> {
        let w = match self.store.load(tenant, keyref, self.clock.now()).await? {
            Some(w) => {
                if let (Some(have), Some(want)) = (w.expires_at, expires_at)
                    && have < want
                {
                    // Extend by a day's slack so a busy contact costs one extra write a day.
                    self.store
                        .extend(tenant, keyref, &w.key_id, want + 86_400)
                        .await?;
                }
                w
            }
            None => {
                let key_id = new_key_id()?;
                let ctx = KeyContext {
                    tenant,
                    keyref,
                    key_id: &key_id,
                };
                let (key, wrapped) = self.wrapper.generate(ctx).await?;
                let w = WrappedKey {
                    key_id: key_id.clone(),
                    wrapped,
                    expires_at: expires_at.map(|e| e + 86_400),
                };
                match self
                    .store
                    .insert(tenant, keyref, &w, self.clock.now())
                    .await?
                {
                    None => {
                        self.remember((tenant.clone(), keyref.to_owned(), key_id), Arc::new(key));
                        w
                    }
                    // Someone else created it first: use theirs.
                    Some(existing) => existing,
                }
            }
        };
        let key = self.unwrap(tenant, keyref, &w).await?;
        Ok(Sealer {
            tenant: tenant.clone(),
            keyref: keyref.to_owned(),
            key_id: w.key_id,
            key,
        })
    }

    /// The sealer of a contact's data.
    pub async fn contact_sealer(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        expires_at: i64,
    ) -> Result<Sealer, CryptoError> {
        self.sealer(tenant, contact_keyref(contact), Some(expires_at))
            .await
    }

    /// Today's transit key of `tenant` (for queue messages), cached.
    pub async fn transit_sealer(&self, tenant: &TenantId, now: i64) -> Result<Sealer, CryptoError> {
        let keyref = transit_keyref(now);
        let ck = (tenant.clone(), keyref.clone());
        if let Some(s) = self
            .transit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ck)
        {
            return Ok(s.clone());
        }
        let day_end = (now.div_euclid(86_400) + 1) * 86_400;
        // The key's expiry is fixed at creation: `sealer` adds a day of slack.
        let s = self
            .sealer(
                tenant,
                &keyref,
                Some(day_end + TRANSIT_KEY_EXTRA_SECS - 86_400),
            )
            .await?;
        self.transit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(ck, s.clone());
        Ok(s)
    }

    /// Opens a sealed value of `tenant` sealed for `purpose`. A key cached here opens even if
    /// another instance destroyed it moments ago (for at most [`KEY_CACHE_TTL`]); use
    /// [`Self::open_current`] where that matters.
    pub async fn open(
        &self,
        tenant: &TenantId,
        purpose: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        self.open_with(tenant, purpose, sealed, false).await
    }

    /// Opens a sealed value only if its key is still the current generation in the key store
    /// (one consistent read): what a writer uses before it stores what it opened, so that a
    /// message queued before its contact was erased cannot bring the contact back.
    pub async fn open_current(
        &self,
        tenant: &TenantId,
        purpose: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        self.open_with(tenant, purpose, sealed, true).await
    }

    async fn open_with(
        &self,
        tenant: &TenantId,
        purpose: &str,
        sealed: &str,
        current: bool,
    ) -> Result<Vec<u8>, CryptoError> {
        let p = parse(sealed)?;
        let ck = (tenant.clone(), p.keyref.to_owned(), p.key_id.to_owned());
        let key = match self.cached(&ck) {
            Some(k) if !current => k,
            _ => match self.store.load(tenant, p.keyref, self.clock.now()).await? {
                Some(w) if w.key_id == p.key_id => self.unwrap(tenant, p.keyref, &w).await?,
                _ => {
                    self.cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop(&ck);
                    return Err(CryptoError::Destroyed);
                }
            },
        };
        let cipher = Aes256Gcm::new(key.expose().into());
        let (nonce, ct) = p.blob.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(tenant, p.keyref, p.key_id, purpose),
                },
            )
            .map_err(|_| CryptoError::Forged)
    }

    /// The key generation `key_id` of `keyref` (cached, else from the key store) and the
    /// associated data of `purpose`/`name` under it: for opening files chunk by chunk.
    pub async fn key_for(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key_id: &str,
        purpose: &str,
        name: &str,
    ) -> Result<(Arc<DataKey>, Vec<u8>), CryptoError> {
        let ck = (tenant.clone(), keyref.to_owned(), key_id.to_owned());
        let key = match self.cached(&ck) {
            Some(k) => k,
            None => match self.store.load(tenant, keyref, self.clock.now()).await? {
                Some(w) if w.key_id == key_id => self.unwrap(tenant, keyref, &w).await?,
                _ => return Err(CryptoError::Destroyed),
            },
        };
        let mut c = aad(tenant, keyref, key_id, purpose);
        c.extend_from_slice(&(name.len() as u32).to_be_bytes());
        c.extend_from_slice(name.as_bytes());
        Ok((key, c))
    }

    pub async fn open_string(
        &self,
        tenant: &TenantId,
        purpose: &str,
        sealed: &str,
    ) -> Result<String, CryptoError> {
        String::from_utf8(self.open(tenant, purpose, sealed).await?)
            .map_err(|_| CryptoError::Malformed)
    }

    /// Destroys a key (crypto-shredding) and forgets every cached generation of it here.
    /// Other warm instances may hold it for at most [`KEY_CACHE_TTL`]; they never write under
    /// it, because writers read the current generation from the key store.
    pub async fn destroy(&self, tenant: &TenantId, keyref: &str) -> Result<bool, CryptoError> {
        let existed = self.store.delete(tenant, keyref).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<CacheKey> = cache
            .iter()
            .filter(|((t, r, _), _)| t == tenant && r == keyref)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            cache.pop(&k);
        }
        Ok(existed)
    }
}

/// Wraps data keys with a local 256-bit master key (AES-256-GCM, the context as associated
/// data): local mode's stand-in for KMS.
pub struct LocalKeyWrapper {
    master: DataKey,
}

impl LocalKeyWrapper {
    pub fn new(master: [u8; 32]) -> Self {
        LocalKeyWrapper {
            master: DataKey::new(master),
        }
    }

    fn aad(context: KeyContext<'_>) -> Vec<u8> {
        aad(context.tenant, context.keyref, context.key_id, "data-key")
    }
}

#[async_trait]
impl KeyWrapper for LocalKeyWrapper {
    async fn generate(&self, context: KeyContext<'_>) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let key = DataKey::random()?;
        let cipher = Aes256Gcm::new(self.master.expose().into());
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.expose(),
                    aad: &Self::aad(context),
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&ct);
        Ok((key, wrapped))
    }

    async fn unwrap(
        &self,
        context: KeyContext<'_>,
        wrapped: &[u8],
    ) -> Result<DataKey, CryptoError> {
        if wrapped.len() < 12 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = wrapped.split_at(12);
        let cipher = Aes256Gcm::new(self.master.expose().into());
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &Self::aad(context),
                },
            )
            .map_err(|_| CryptoError::Forged)?;
        DataKey::from_slice(&plain)
    }
}

/// A key store in memory (tests, benches).
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<std::collections::HashMap<(TenantId, String), WrappedKey>>,
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn load(
        &self,
        tenant: &TenantId,
        keyref: &str,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys
            .get(&(tenant.clone(), keyref.to_owned()))
            .filter(|w| w.expires_at.is_none_or(|e| e > now))
            .cloned())
    }

    async fn insert(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key: &WrappedKey,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let k = (tenant.clone(), keyref.to_owned());
        if let Some(existing) = keys.get(&k)
            && existing.expires_at.is_none_or(|e| e > now)
        {
            return Ok(Some(existing.clone()));
        }
        keys.insert(k, key.clone());
        Ok(None)
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), CryptoError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = keys.get_mut(&(tenant.clone(), keyref.to_owned()))
            && w.key_id == key_id
        {
            w.expires_at = Some(expires_at);
        }
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, keyref: &str) -> Result<bool, CryptoError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys.remove(&(tenant.clone(), keyref.to_owned())).is_some())
    }
}

impl Keyring {
    /// A keyring with keys in memory under a fixed master key (tests, benches).
    pub fn in_memory(clock: Clock) -> Self {
        Keyring::new(
            Arc::new(MemoryKeyStore::default()),
            Arc::new(LocalKeyWrapper::new([0x5a; 32])),
            clock,
        )
    }
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
