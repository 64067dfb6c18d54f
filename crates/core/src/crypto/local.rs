//! Local mode's stand-ins: a master key file instead of KMS, keys in memory for tests.

use super::*;

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
