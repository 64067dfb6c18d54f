//! Data keys on AWS: generated and unwrapped by KMS (the deployment's CMK, with the tenant,
//! key name and generation as encryption context, visible in CloudTrail and pseudonymous), and
//! kept wrapped in a DynamoDB table of their own.
//!
//! The key table has **no point-in-time recovery** on purpose: deleting a contact's key item
//! must be final, or a restored backup would bring the key — and with it every sealed copy of
//! the contact's data — back. The message table keeps PITR; its backups hold only sealed
//! values. (`docs/privacy.md` explains the trade-off.)
//!
//! Also the audit log's table (append-only: functions may only `PutItem` on it).

use crate::dynamo::{Item, get_n, get_s, n, s};
use crate::sdk_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;
use relay_core::crypto::{CryptoError, DataKey, KeyContext, KeyStore, KeyWrapper, WrappedKey};
use relay_core::ids::TenantId;
use relay_core::ports::{AuditLog, StoreError};
use relay_core::records::AuditEntry;

fn key_pk(tenant: &TenantId, keyref: &str) -> String {
    format!("{tenant}#{keyref}")
}

fn unavailable(what: String) -> CryptoError {
    CryptoError::Unavailable(what)
}

#[derive(Clone, Debug)]
pub struct DynamoKeyStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoKeyStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoKeyStore {
            client,
            table: table.into(),
        }
    }

    fn from_item(item: &Item) -> Result<WrappedKey, CryptoError> {
        let wrapped = item
            .get("wrapped")
            .and_then(|v| v.as_b().ok())
            .ok_or(CryptoError::Malformed)?;
        Ok(WrappedKey {
            key_id: get_s(item, "key_id")
                .ok_or(CryptoError::Malformed)?
                .to_owned(),
            wrapped: wrapped.as_ref().to_vec(),
            expires_at: get_n(item, "expires_at"),
        })
    }
}

#[async_trait]
impl KeyStore for DynamoKeyStore {
    async fn load(
        &self,
        tenant: &TenantId,
        keyref: &str,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(tenant, keyref)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(sdk_error("GetItem", &e)))?;
        match out.item {
            Some(item) => {
                let w = Self::from_item(&item)?;
                // TTL deletion lags: an expired key counts as gone.
                if w.expires_at.is_some_and(|e| e <= now) {
                    return Ok(None);
                }
                Ok(Some(w))
            }
            None => Ok(None),
        }
    }

    async fn insert(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key: &WrappedKey,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(key_pk(tenant, keyref)))
            .item("key_id", s(&key.key_id))
            .item("wrapped", AttributeValue::B(Blob::new(key.wrapped.clone())))
            .item("created_at", n(now))
            // An expired (not yet deleted) key may be replaced.
            .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now));
        if let Some(e) = key.expires_at {
            put = put.item("expires_at", n(e));
        }
        match put.send().await {
            Ok(_) => Ok(None),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                self.load(tenant, keyref, now).await
            }
            Err(e) => Err(unavailable(sdk_error("PutItem", &e))),
        }
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), CryptoError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(tenant, keyref)))
            .update_expression("SET expires_at = :e")
            .condition_expression("key_id = :k AND expires_at < :e")
            .expression_attribute_values(":e", n(expires_at))
            .expression_attribute_values(":k", s(key_id))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(sdk_error("UpdateItem", &e))),
        }
    }

    async fn delete(&self, tenant: &TenantId, keyref: &str) -> Result<bool, CryptoError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(key_pk(tenant, keyref)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable(sdk_error("DeleteItem", &e)))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}

/// KMS `GenerateDataKey` / `Decrypt` under the deployment's key, with the key's context.
#[derive(Clone, Debug)]
pub struct KmsKeyWrapper {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeyWrapper {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        KmsKeyWrapper {
            client,
            key_id: key_id.into(),
        }
    }
}

fn kms_code<E: aws_sdk_kms::error::ProvideErrorMetadata, R>(
    op: &str,
    e: &aws_sdk_kms::error::SdkError<E, R>,
) -> String {
    use aws_sdk_kms::error::SdkError;
    let what = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failure (endpoint unreachable)".to_owned(),
        _ => "SDK error".to_owned(),
    };
    format!("KMS {op}: {what}")
}

#[async_trait]
impl KeyWrapper for KmsKeyWrapper {
    async fn generate(&self, c: KeyContext<'_>) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .encryption_context("tenant", c.tenant.as_str())
            .encryption_context("keyref", c.keyref)
            .encryption_context("key_id", c.key_id)
            .send()
            .await
            .map_err(|e| unavailable(kms_code("GenerateDataKey", &e)))?;
        let plain = out.plaintext.ok_or(CryptoError::Malformed)?;
        let wrapped = out.ciphertext_blob.ok_or(CryptoError::Malformed)?;
        Ok((DataKey::from_slice(plain.as_ref())?, wrapped.into_inner()))
    }

    async fn unwrap(&self, c: KeyContext<'_>, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let r = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .encryption_context("tenant", c.tenant.as_str())
            .encryption_context("keyref", c.keyref)
            .encryption_context("key_id", c.key_id)
            .send()
            .await;
        match r {
            Ok(out) => DataKey::from_slice(out.plaintext.ok_or(CryptoError::Malformed)?.as_ref()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_invalid_ciphertext_exception()) =>
            {
                Err(CryptoError::Forged)
            }
            Err(e) => Err(unavailable(kms_code("Decrypt", &e))),
        }
    }
}

/// The audit log table: `tenant` / `at` (`{at_ms:013}#{random}`), TTL `expires_at`.
#[derive(Clone, Debug)]
pub struct DynamoAuditLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoAuditLog {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoAuditLog {
            client,
            table: table.into(),
        }
    }

    fn entry(item: &Item) -> Result<AuditEntry, StoreError> {
        let bad = || StoreError::Corrupt("audit item is incomplete".into());
        let at = get_s(item, "at").ok_or_else(bad)?;
        Ok(AuditEntry {
            at_ms: at
                .split('#')
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?,
            tenant: TenantId::parse(get_s(item, "tenant").ok_or_else(bad)?).map_err(|_| bad())?,
            actor: get_s(item, "actor").ok_or_else(bad)?.to_owned(),
            action: get_s(item, "action").ok_or_else(bad)?.to_owned(),
            target: get_s(item, "target").map(str::to_owned),
            result: get_n(item, "result")
                .and_then(|r| u16::try_from(r).ok())
                .ok_or_else(bad)?,
            expires_at: get_n(item, "expires_at").ok_or_else(bad)?,
        })
    }
}

#[async_trait]
impl AuditLog for DynamoAuditLog {
    async fn append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let mut rnd = [0u8; 6];
        getrandom::fill(&mut rnd).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("tenant", s(e.tenant.as_str()))
            .item("at", s(format!("{:013}#{}", e.at_ms, hex::encode(rnd))))
            .item("actor", s(&e.actor))
            .item("action", s(&e.action))
            .item("result", n(i64::from(e.result)))
            .item("expires_at", n(e.expires_at))
            .condition_expression("attribute_not_exists(tenant)");
        if let Some(t) = &e.target {
            put = put.item("target", s(t));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            // The key is the time and 48 random bits: an entry already there is this one, written
            // by an earlier attempt of this call whose answer was lost (the SDK retried). Found
            // by the fault suite, where such reads were answered 503.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("PutItem", &e))),
        }
    }

    async fn list(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, last) = match tenant {
                Some(t) => {
                    let r = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("tenant = :t")
                        .filter_expression("expires_at > :now")
                        .expression_attribute_values(":t", s(t.as_str()))
                        .expression_attribute_values(":now", n(now))
                        .scan_index_forward(false)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| StoreError::Unavailable(sdk_error("Query", &e)))?;
                    (r.items.unwrap_or_default(), r.last_evaluated_key)
                }
                None => {
                    let r = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .filter_expression("expires_at > :now")
                        .expression_attribute_values(":now", n(now))
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| StoreError::Unavailable(sdk_error("Scan", &e)))?;
                    (r.items.unwrap_or_default(), r.last_evaluated_key)
                }
            };
            for item in &items {
                out.push(Self::entry(item)?);
            }
            // One tenant's query comes newest first: stop at the limit. A scan has no order.
            if tenant.is_some() && out.len() >= limit {
                break;
            }
            match last {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        out.truncate(limit);
        Ok(out)
    }
}
