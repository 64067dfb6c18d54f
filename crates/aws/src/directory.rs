//! [`Directory`] on the DynamoDB table, written by `relay tenants apply`.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | tenant | `TENANT#{tenant}` | `TENANT` |
//! | channel | `CHANNEL#{phone_number_id}` | `CHANNEL` |
//! | API key | `APIKEY#{sha256 hex}` | `APIKEY` |
//! | Meta app | `METAAPP#{app id}` | `METAAPP` |
//! | business account (its first channel) | `WABA#{waba id}` | `WABA` |
//! | pseudonymisation key | `CONFIG` | `PSEUDONYM_KEY` |
//!
//! Channel secrets are KMS ciphertexts (the webhook token only as SHA-256). Lookups are cached
//! for a minute per warm Lambda, so a webhook costs no DynamoDB or KMS call on the hot path;
//! unknown channels are cached too, so junk traffic cannot hammer the table.

use crate::dynamo::{Item, get_n, get_s, s};
use crate::kms::KmsSecrets;
use crate::sdk_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use relay_core::ids::TenantId;
use relay_core::ports::{Directory, StoreError};
use relay_core::tenant::{Channel, DEFAULT_RETENTION_DAYS, MetaApp, Provider, Tenant, WebhookAuth};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) fn tenant_pk(t: &TenantId) -> String {
    format!("TENANT#{t}")
}

pub(crate) fn channel_pk(phone_number_id: &str) -> String {
    format!("CHANNEL#{phone_number_id}")
}

pub(crate) fn meta_app_pk(app_id: &str) -> String {
    format!("METAAPP#{app_id}")
}

pub(crate) fn waba_pk(waba_id: &str) -> String {
    format!("WABA#{waba_id}")
}

pub(crate) fn api_key_pk(digest: &[u8; 32]) -> String {
    format!("APIKEY#{}", hex::encode(digest))
}

struct Cache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Cache<V> {
    fn new(ttl: Duration) -> Self {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, k: &str) -> Option<V> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, k: String, v: V) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(k, (Instant::now(), v));
    }
}

pub struct DynamoDirectory {
    client: Client,
    table: String,
    kms: KmsSecrets,
    channels: Cache<Option<Channel>>,
    tenants: Cache<Option<Tenant>>,
    api_keys: Cache<Option<TenantId>>,
    meta_apps: Cache<Option<MetaApp>>,
    wabas: Cache<Option<String>>,
}

impl DynamoDirectory {
    pub fn new(client: Client, table: impl Into<String>, kms: KmsSecrets) -> Self {
        Self::with_cache_ttl(client, table, kms, Duration::from_secs(60))
    }

    pub fn with_cache_ttl(
        client: Client,
        table: impl Into<String>,
        kms: KmsSecrets,
        ttl: Duration,
    ) -> Self {
        DynamoDirectory {
            client,
            table: table.into(),
            kms,
            channels: Cache::new(ttl),
            tenants: Cache::new(ttl),
            api_keys: Cache::new(ttl),
            meta_apps: Cache::new(ttl),
            wabas: Cache::new(ttl),
        }
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("GetItem", &e)))?;
        Ok(out.item)
    }

    async fn secret(
        &self,
        item: &Item,
        pk: &str,
        field: &str,
    ) -> Result<Option<SecretString>, StoreError> {
        match get_s(item, field) {
            None => Ok(None),
            Some(ct) => {
                let plain = self
                    .kms
                    .decrypt_string(ct, pk, field)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Some(SecretString::from(plain)))
            }
        }
    }

    async fn load_channel(&self, phone_number_id: &str) -> Result<Option<Channel>, StoreError> {
        let pk = channel_pk(phone_number_id);
        let Some(item) = self.get(pk.clone(), "CHANNEL").await? else {
            return Ok(None);
        };
        let corrupt = |w: &str| StoreError::Corrupt(format!("channel item: {w}"));
        let tenant_id =
            TenantId::parse(get_s(&item, "tenant_id").ok_or_else(|| corrupt("no tenant_id"))?)
                .map_err(|_| corrupt("invalid tenant_id"))?;
        let provider = get_s(&item, "provider")
            .and_then(Provider::parse)
            .ok_or_else(|| corrupt("unknown provider"))?;
        let auth = match provider {
            Provider::Dialog360 => {
                let digest = get_s(&item, "webhook_token_sha256")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| corrupt("no webhook_token_sha256"))?;
                WebhookAuth::Dialog360 {
                    token_sha256: digest,
                    signing_secret: self.secret(&item, &pk, "signing_secret").await?,
                }
            }
            Provider::Meta => WebhookAuth::Meta {
                app_secret: self
                    .secret(&item, &pk, "app_secret")
                    .await?
                    .ok_or_else(|| corrupt("no app_secret"))?,
                verify_token: self
                    .secret(&item, &pk, "verify_token")
                    .await?
                    .ok_or_else(|| corrupt("no verify_token"))?,
            },
        };
        Ok(Some(Channel {
            phone_number_id: phone_number_id.to_owned(),
            tenant_id,
            auth,
            send_key: self.secret(&item, &pk, "send_key").await?,
            api_base_url: get_s(&item, "api_base_url").map(str::to_owned),
            send_rate_per_second: get_n(&item, "send_rate_per_second")
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(relay_core::tenant::DEFAULT_SEND_RATE),
            meta_app: get_s(&item, "meta_app").map(str::to_owned),
            waba_id: get_s(&item, "waba_id").map(str::to_owned),
        }))
    }

    async fn load_meta_app(&self, app_id: &str) -> Result<Option<MetaApp>, StoreError> {
        let pk = meta_app_pk(app_id);
        let Some(item) = self.get(pk.clone(), "METAAPP").await? else {
            return Ok(None);
        };
        let corrupt = |w: &str| StoreError::Corrupt(format!("Meta app item: {w}"));
        Ok(Some(MetaApp {
            id: app_id.to_owned(),
            app_secret: self
                .secret(&item, &pk, "app_secret")
                .await?
                .ok_or_else(|| corrupt("no app_secret"))?,
            verify_token: self
                .secret(&item, &pk, "verify_token")
                .await?
                .ok_or_else(|| corrupt("no verify_token"))?,
        }))
    }

    async fn load_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let pk = tenant_pk(id);
        let Some(item) = self.get(pk.clone(), "TENANT").await? else {
            return Ok(None);
        };
        Ok(Some(Tenant {
            id: id.clone(),
            name: get_s(&item, "name").unwrap_or_default().to_owned(),
            retention_days: get_n(&item, "retention_days")
                .and_then(|d| u32::try_from(d).ok())
                .unwrap_or(DEFAULT_RETENTION_DAYS),
            forward_url: get_s(&item, "forward_url").map(str::to_owned),
            forward_secret: self.secret(&item, &pk, "forward_secret").await?,
            policy: match get_s(&item, "policy") {
                Some(p) => serde_json::from_str(p)
                    .map_err(|_| StoreError::Corrupt("tenant item: unreadable policy".into()))?,
                None => relay_core::policy::TenantPolicy::default(),
            },
        }))
    }
}

#[async_trait]
impl Directory for DynamoDirectory {
    async fn channel(&self, phone_number_id: &str) -> Result<Option<Channel>, StoreError> {
        if let Some(hit) = self.channels.get(phone_number_id) {
            return Ok(hit);
        }
        let c = self.load_channel(phone_number_id).await?;
        self.channels.put(phone_number_id.to_owned(), c.clone());
        Ok(c)
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        if let Some(hit) = self.tenants.get(id.as_str()) {
            return Ok(hit);
        }
        let t = self.load_tenant(id).await?;
        self.tenants.put(id.as_str().to_owned(), t.clone());
        Ok(t)
    }

    async fn tenant_for_api_key(&self, digest: &[u8; 32]) -> Result<Option<TenantId>, StoreError> {
        let pk = api_key_pk(digest);
        if let Some(hit) = self.api_keys.get(&pk) {
            return Ok(hit);
        }
        let t = match self.get(pk.clone(), "APIKEY").await? {
            Some(item) => Some(
                TenantId::parse(get_s(&item, "tenant_id").unwrap_or_default())
                    .map_err(|_| StoreError::Corrupt("API key item: invalid tenant_id".into()))?,
            ),
            None => None,
        };
        self.api_keys.put(pk, t.clone());
        Ok(t)
    }

    async fn meta_app(&self, app_id: &str) -> Result<Option<MetaApp>, StoreError> {
        if let Some(hit) = self.meta_apps.get(app_id) {
            return Ok(hit);
        }
        let a = self.load_meta_app(app_id).await?;
        self.meta_apps.put(app_id.to_owned(), a.clone());
        Ok(a)
    }

    async fn waba_channel(&self, waba_id: &str) -> Result<Option<Channel>, StoreError> {
        let pnid = match self.wabas.get(waba_id) {
            Some(hit) => hit,
            None => {
                let pnid = self
                    .get(waba_pk(waba_id), "WABA")
                    .await?
                    .and_then(|item| get_s(&item, "phone_number_id").map(str::to_owned));
                self.wabas.put(waba_id.to_owned(), pnid.clone());
                pnid
            }
        };
        match pnid {
            Some(p) => self.channel(&p).await,
            None => Ok(None),
        }
    }
}
