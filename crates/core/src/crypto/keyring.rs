//! The keyring: data keys created, cached, unwrapped, sealed with, opened and destroyed.

use super::*;

type CacheKey = (TenantId, String, String);
/// A key's name per tenant, and the sealer last read as current for it with the key's expiry.
type Recent = lru::LruCache<(TenantId, String), (Sealer, Option<i64>, Instant)>;

/// Data keys: creation, cached unwrapping, sealing, opening and destruction.
pub struct Keyring {
    store: Arc<dyn KeyStore>,
    wrapper: Arc<dyn KeyWrapper>,
    cache: Mutex<lru::LruCache<CacheKey, (Arc<DataKey>, Instant)>>,
    /// Current transit key per (tenant, keyref): transit keys are never destroyed early.
    transit: Mutex<lru::LruCache<(TenantId, String), Sealer>>,
    /// The generation of each key last read as current here, with the key's expiry: a guess
    /// to seal with while [`Self::is_current`] checks it, never proof on its own.
    recent: Mutex<Recent>,
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
            recent: Mutex::new(lru::LruCache::new(n)),
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
            Some(mut w) => {
                if let (Some(have), Some(want)) = (w.expires_at, expires_at)
                    && have < want
                {
                    // Extend by a day's slack so a busy contact costs one extra write a day.
                    self.store
                        .extend(tenant, keyref, &w.key_id, want + 86_400)
                        .await?;
                    w.expires_at = Some(want + 86_400);
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
        let sealer = Sealer {
            tenant: tenant.clone(),
            keyref: keyref.to_owned(),
            key_id: w.key_id,
            key,
        };
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).put(
            (tenant.clone(), keyref.to_owned()),
            (sealer.clone(), w.expires_at, Instant::now()),
        );
        Ok(sealer)
    }

    /// The generation of `keyref` last read as current by this instance (within
    /// [`KEY_CACHE_TTL`], like every cached key), if its key lives at least until `expires_at`
    /// — with no read. It may have been destroyed since (an erasure on another instance):
    /// whoever seals with it checks [`Self::is_current`] before relying on what it sealed.
    pub fn recent_sealer(
        &self,
        tenant: &TenantId,
        keyref: &str,
        expires_at: Option<i64>,
    ) -> Option<Sealer> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let k = (tenant.clone(), keyref.to_owned());
        let (sealer, until, read_at) = recent.get(&k)?;
        if read_at.elapsed() >= KEY_CACHE_TTL {
            recent.pop(&k);
            return None;
        }
        match (until, expires_at) {
            (Some(have), Some(want)) if *have < want => None,
            _ => Some(sealer.clone()),
        }
    }

    /// Whether `sealer`'s generation is still the current one in the key store (one
    /// consistent read); forgets it here if not.
    pub async fn is_current(&self, sealer: &Sealer) -> Result<bool, CryptoError> {
        let current = self
            .store
            .load(&sealer.tenant, &sealer.keyref, self.clock.now())
            .await?
            .is_some_and(|w| w.key_id == sealer.key_id);
        if !current {
            self.recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop(&(sealer.tenant.clone(), sealer.keyref.clone()));
        }
        Ok(current)
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
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop(&(tenant.clone(), keyref.to_owned()));
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
