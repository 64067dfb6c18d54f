//! A [`Directory`] held in memory, built from `relay.toml`: what `relay serve` uses, and the
//! fake for tests.

use crate::config::RelayConfig;
use crate::ids::TenantId;
use crate::ports::{Directory, StoreError};
use crate::tenant::{Channel, MetaApp, Tenant};
use async_trait::async_trait;
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct StaticDirectory {
    tenants: HashMap<TenantId, Tenant>,
    channels: HashMap<String, Channel>,
    api_keys: HashMap<[u8; 32], TenantId>,
    meta_apps: HashMap<String, MetaApp>,
    /// Each business account's first channel.
    wabas: HashMap<String, String>,
}

impl StaticDirectory {
    pub fn from_config(config: &RelayConfig) -> Self {
        let mut d = StaticDirectory::default();
        for a in &config.meta_apps {
            d.meta_apps.insert(a.id.clone(), a.clone());
        }
        for t in &config.tenants {
            d.tenants.insert(t.tenant.id.clone(), t.tenant.clone());
            for c in &t.channels {
                d.channels.insert(c.phone_number_id.clone(), c.clone());
                if let Some(waba) = &c.waba_id {
                    d.wabas
                        .entry(waba.clone())
                        .or_insert_with(|| c.phone_number_id.clone());
                }
            }
            for k in &t.api_key_digests {
                d.api_keys.insert(*k, t.tenant.id.clone());
            }
        }
        d
    }
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn channel(&self, phone_number_id: &str) -> Result<Option<Channel>, StoreError> {
        Ok(self.channels.get(phone_number_id).cloned())
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(self.tenants.get(id).cloned())
    }

    async fn tenant_for_api_key(&self, digest: &[u8; 32]) -> Result<Option<TenantId>, StoreError> {
        Ok(self.api_keys.get(digest).cloned())
    }

    async fn meta_app(&self, app_id: &str) -> Result<Option<MetaApp>, StoreError> {
        Ok(self.meta_apps.get(app_id).cloned())
    }

    async fn waba_channel(&self, waba_id: &str) -> Result<Option<Channel>, StoreError> {
        Ok(self
            .wabas
            .get(waba_id)
            .and_then(|pnid| self.channels.get(pnid))
            .cloned())
    }
}
