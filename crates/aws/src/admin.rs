//! Operator actions against a deployment: write tenants and channels from `relay.toml`,
//! create the pseudonymisation key, and look at or redrive dead letters.

use crate::directory::{api_key_pk, channel_pk, meta_app_pk, tenant_pk, waba_pk};
use crate::dynamo::{Item, get_s, n, s};
use crate::kms::{KmsError, KmsSecrets};
use crate::sdk_error;
use aws_sdk_dynamodb::Client as Dynamo;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_sqs::Client as Sqs;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use relay_core::config::RelayConfig;
use relay_core::tenant::WebhookAuth;
use secrecy::ExposeSecret;
use std::collections::HashSet;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("DynamoDB {0}")]
    Dynamo(String),
    #[error("SQS {0}")]
    Sqs(String),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(
        "the pseudonymisation key is missing: run `relay tenants apply` against this table first"
    )]
    NoPseudonymKey,
    #[error("the table holds a malformed item: {0}")]
    Corrupt(&'static str),
}

const KEY_PK: &str = "CONFIG";
const KEY_SK: &str = "PSEUDONYM_KEY";
const KEY_FIELD: &str = "pseudonym_key";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub tenants: usize,
    pub channels: usize,
    pub api_keys: usize,
    pub meta_apps: usize,
    pub removed_channels: usize,
    pub removed_api_keys: usize,
    pub created_pseudonym_key: bool,
}

async fn put(dynamo: &Dynamo, table: &str, item: Item) -> Result<(), AdminError> {
    dynamo
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .map_err(|e| AdminError::Dynamo(sdk_error("PutItem", &e)))?;
    Ok(())
}

async fn delete(dynamo: &Dynamo, table: &str, pk: String, sk: &str) -> Result<(), AdminError> {
    dynamo
        .delete_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .send()
        .await
        .map_err(|e| AdminError::Dynamo(sdk_error("DeleteItem", &e)))?;
    Ok(())
}

fn string_set(item: &Item, k: &str) -> HashSet<String> {
    item.get(k)
        .and_then(|v| v.as_ss().ok())
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default()
}

/// Writes every tenant, channel and API key of `config` to the table, removing the channels
/// and API keys a tenant no longer lists. Tenants absent from the file are left alone.
/// Creates the pseudonymisation key if the table has none. Idempotent.
pub async fn apply_tenants(
    dynamo: &Dynamo,
    kms: &KmsSecrets,
    table: &str,
    config: &RelayConfig,
    mut progress: impl FnMut(&str),
) -> Result<ApplyReport, AdminError> {
    let mut report = ApplyReport {
        created_pseudonym_key: ensure_pseudonym_key(dynamo, kms, table).await?.1,
        ..ApplyReport::default()
    };
    for app in &config.meta_apps {
        let pk = meta_app_pk(&app.id);
        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        item.insert("sk".into(), s("METAAPP"));
        for (field, secret) in [
            ("app_secret", &app.app_secret),
            ("verify_token", &app.verify_token),
        ] {
            let ct = kms
                .encrypt(secret.expose_secret().as_bytes(), &pk, field)
                .await?;
            item.insert(field.into(), s(ct));
        }
        put(dynamo, table, item).await?;
        report.meta_apps += 1;
        progress(&format!("Meta app {}", app.id));
    }
    for t in &config.tenants {
        let tenant = &t.tenant;
        let pk = tenant_pk(&tenant.id);
        let previous = dynamo
            .get_item()
            .table_name(table)
            .key("pk", s(&pk))
            .key("sk", s("TENANT"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AdminError::Dynamo(sdk_error("GetItem", &e)))?
            .item
            .unwrap_or_default();

        let keys: HashSet<String> = t.api_key_digests.iter().map(hex::encode).collect();
        let channels: HashSet<String> = t
            .channels
            .iter()
            .map(|c| c.phone_number_id.clone())
            .collect();
        for old in string_set(&previous, "api_key_digests").difference(&keys) {
            delete(dynamo, table, format!("APIKEY#{old}"), "APIKEY").await?;
            report.removed_api_keys += 1;
        }
        for old in string_set(&previous, "channel_ids").difference(&channels) {
            delete(dynamo, table, channel_pk(old), "CHANNEL").await?;
            report.removed_channels += 1;
        }
        // Each business account's events are filed under its first channel.
        let mut wabas: Vec<(&str, &str)> = Vec::new();
        for c in &t.channels {
            if let Some(w) = &c.waba_id
                && !wabas.iter().any(|(have, _)| have == w)
            {
                wabas.push((w, &c.phone_number_id));
            }
        }
        let waba_ids: HashSet<String> = wabas.iter().map(|(w, _)| (*w).to_owned()).collect();
        for old in string_set(&previous, "waba_ids").difference(&waba_ids) {
            delete(dynamo, table, waba_pk(old), "WABA").await?;
        }
        for (waba, pnid) in &wabas {
            let mut item = Item::new();
            item.insert("pk".into(), s(waba_pk(waba)));
            item.insert("sk".into(), s("WABA"));
            item.insert("tenant_id".into(), s(tenant.id.as_str()));
            item.insert("phone_number_id".into(), s(*pnid));
            put(dynamo, table, item).await?;
        }

        for c in &t.channels {
            let cpk = channel_pk(&c.phone_number_id);
            let mut item = Item::new();
            item.insert("pk".into(), s(&cpk));
            item.insert("sk".into(), s("CHANNEL"));
            item.insert("tenant_id".into(), s(tenant.id.as_str()));
            let mut secrets: Vec<(&str, &secrecy::SecretString)> = Vec::new();
            match &c.auth {
                WebhookAuth::Dialog360 {
                    token_sha256,
                    signing_secret,
                } => {
                    item.insert("provider".into(), s("360dialog"));
                    item.insert("webhook_token_sha256".into(), s(hex::encode(token_sha256)));
                    if let Some(sig) = signing_secret {
                        secrets.push(("signing_secret", sig));
                    }
                }
                WebhookAuth::Meta {
                    app_secret,
                    verify_token,
                } => {
                    item.insert("provider".into(), s("meta"));
                    secrets.push(("app_secret", app_secret));
                    secrets.push(("verify_token", verify_token));
                }
            }
            if let Some(k) = &c.send_key {
                secrets.push(("send_key", k));
            }
            for (field, secret) in secrets {
                let ct = kms
                    .encrypt(secret.expose_secret().as_bytes(), &cpk, field)
                    .await?;
                item.insert(field.into(), s(ct));
            }
            if let Some(url) = &c.api_base_url {
                item.insert("api_base_url".into(), s(url));
            }
            if let Some(app) = &c.meta_app {
                item.insert("meta_app".into(), s(app));
            }
            if let Some(waba) = &c.waba_id {
                item.insert("waba_id".into(), s(waba));
            }
            item.insert(
                "send_rate_per_second".into(),
                n(i64::from(c.send_rate_per_second)),
            );
            put(dynamo, table, item).await?;
            report.channels += 1;
        }
        for digest in &t.api_key_digests {
            let mut item = Item::new();
            item.insert("pk".into(), s(api_key_pk(digest)));
            item.insert("sk".into(), s("APIKEY"));
            item.insert("tenant_id".into(), s(tenant.id.as_str()));
            put(dynamo, table, item).await?;
            report.api_keys += 1;
        }

        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        item.insert("sk".into(), s("TENANT"));
        item.insert("tenant_id".into(), s(tenant.id.as_str()));
        item.insert("name".into(), s(&tenant.name));
        item.insert("retention_days".into(), n(i64::from(tenant.retention_days)));
        item.insert(
            "policy".into(),
            s(serde_json::to_string(&tenant.policy).unwrap_or_default()),
        );
        if let Some(url) = &tenant.forward_url {
            item.insert("forward_url".into(), s(url));
        }
        if let Some(secret) = &tenant.forward_secret {
            item.insert(
                "forward_secret".into(),
                s(kms
                    .encrypt(secret.expose_secret().as_bytes(), &pk, "forward_secret")
                    .await?),
            );
        }
        // DynamoDB refuses empty sets, so empty ones are left out.
        if !keys.is_empty() {
            item.insert(
                "api_key_digests".into(),
                AttributeValue::Ss(keys.into_iter().collect()),
            );
        }
        if !channels.is_empty() {
            item.insert(
                "channel_ids".into(),
                AttributeValue::Ss(channels.into_iter().collect()),
            );
        }
        if !waba_ids.is_empty() {
            item.insert(
                "waba_ids".into(),
                AttributeValue::Ss(waba_ids.into_iter().collect()),
            );
        }
        put(dynamo, table, item).await?;
        report.tenants += 1;
        progress(&format!(
            "tenant {}: {} channel(s), {} API key(s)",
            tenant.id,
            t.channels.len(),
            t.api_key_digests.len()
        ));
    }
    Ok(report)
}

/// The deployment's pseudonymisation key, created (KMS data key) if the table has none.
/// Returns the key and whether it was created now.
pub async fn ensure_pseudonym_key(
    dynamo: &Dynamo,
    kms: &KmsSecrets,
    table: &str,
) -> Result<([u8; 32], bool), AdminError> {
    match load_pseudonym_key(dynamo, kms, table).await {
        Ok(k) => return Ok((k, false)),
        Err(AdminError::NoPseudonymKey) => {}
        Err(e) => return Err(e),
    }
    let (plain, ct) = kms.generate_data_key(KEY_PK, KEY_FIELD).await?;
    let result = dynamo
        .put_item()
        .table_name(table)
        .item("pk", s(KEY_PK))
        .item("sk", s(KEY_SK))
        .item("ciphertext", s(ct))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match result {
        Ok(_) => Ok((plain, true)),
        // Someone else created it first: theirs is the key.
        Err(e)
            if e.as_service_error()
                .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
        {
            Ok((load_pseudonym_key(dynamo, kms, table).await?, false))
        }
        Err(e) => Err(AdminError::Dynamo(sdk_error("PutItem", &e))),
    }
}

/// Reads the pseudonymisation key (what the router does at start).
pub async fn load_pseudonym_key(
    dynamo: &Dynamo,
    kms: &KmsSecrets,
    table: &str,
) -> Result<[u8; 32], AdminError> {
    let item = dynamo
        .get_item()
        .table_name(table)
        .key("pk", s(KEY_PK))
        .key("sk", s(KEY_SK))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| AdminError::Dynamo(sdk_error("GetItem", &e)))?
        .item
        .ok_or(AdminError::NoPseudonymKey)?;
    let ct = get_s(&item, "ciphertext").ok_or(AdminError::Corrupt(
        "pseudonymisation key without ciphertext",
    ))?;
    let plain = kms.decrypt(ct, KEY_PK, KEY_FIELD).await?;
    plain
        .try_into()
        .map_err(|_| AdminError::Corrupt("pseudonymisation key is not 32 bytes"))
}

impl KmsSecrets {
    /// A fresh AES-256 data key: (plaintext, base64 ciphertext bound to item and field).
    pub(crate) async fn generate_data_key(
        &self,
        item: &str,
        field: &str,
    ) -> Result<([u8; 32], String), KmsError> {
        let key = self.key_id().ok_or(KmsError::NoKey)?;
        let out = self
            .client()
            .generate_data_key()
            .key_id(key)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("relay:item", item)
            .encryption_context("relay:field", field)
            .send()
            .await
            .map_err(|e| {
                KmsError::Call(format!(
                    "GenerateDataKey: {}",
                    e.as_service_error()
                        .and_then(|x| aws_sdk_kms::error::ProvideErrorMetadata::code(x))
                        .unwrap_or("error")
                ))
            })?;
        let plain: [u8; 32] = out
            .plaintext()
            .map(Blob::as_ref)
            .and_then(|b| b.try_into().ok())
            .ok_or(KmsError::Call(
                "GenerateDataKey: no 32-byte plaintext".into(),
            ))?;
        let ct = out
            .ciphertext_blob()
            .ok_or(KmsError::Call("GenerateDataKey: no ciphertext".into()))?;
        Ok((plain, STANDARD.encode(ct.as_ref())))
    }
}

/// One tenant as `relay tenants list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    pub id: String,
    pub name: String,
    pub channels: usize,
    pub api_keys: usize,
}

pub async fn list_tenants(dynamo: &Dynamo, table: &str) -> Result<Vec<TenantSummary>, AdminError> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        // Tenants are few; a filtered scan keeps the key design free of a tenant index.
        let resp = dynamo
            .scan()
            .table_name(table)
            .filter_expression("sk = :t")
            .expression_attribute_values(":t", s("TENANT"))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| AdminError::Dynamo(sdk_error("Scan", &e)))?;
        for item in resp.items() {
            out.push(TenantSummary {
                id: get_s(item, "tenant_id").unwrap_or_default().to_owned(),
                name: get_s(item, "name").unwrap_or_default().to_owned(),
                channels: string_set(item, "channel_ids").len(),
                api_keys: string_set(item, "api_key_digests").len(),
            });
        }
        match resp.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn sqs_err<E: aws_sdk_sqs::error::ProvideErrorMetadata, R>(
    op: &str,
    e: &aws_sdk_sqs::error::SdkError<E, R>,
) -> AdminError {
    let code = e
        .as_service_error()
        .and_then(|x| x.code())
        .unwrap_or("request failed");
    AdminError::Sqs(format!("{op}: {code}"))
}

/// A dead letter as `relay dlq list` shows it: ids and sizes, never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    pub message_id: String,
    pub receive_count: u32,
    pub sent_at_ms: i64,
    pub size: usize,
}

/// Peeks at up to `limit` dead letters (they stay in the queue).
pub async fn dlq_list(
    sqs: &Sqs,
    dlq_url: &str,
    limit: usize,
) -> Result<Vec<DeadLetterSummary>, AdminError> {
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;
    let mut out: Vec<DeadLetterSummary> = Vec::new();
    let mut seen = HashSet::new();
    while out.len() < limit {
        let resp = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(5)
            .message_system_attribute_names(A::ApproximateReceiveCount)
            .message_system_attribute_names(A::SentTimestamp)
            .send()
            .await
            .map_err(|e| sqs_err("ReceiveMessage", &e))?;
        let messages = resp.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        let mut new = 0;
        for m in messages {
            let id = m.message_id.clone().unwrap_or_default();
            if !seen.insert(id.clone()) {
                continue;
            }
            new += 1;
            let attr = |k: A| {
                m.attributes()
                    .and_then(|a| a.get(&k))
                    .and_then(|v| v.parse().ok())
            };
            out.push(DeadLetterSummary {
                message_id: id,
                receive_count: attr(A::ApproximateReceiveCount).unwrap_or(0) as u32,
                sent_at_ms: attr(A::SentTimestamp).unwrap_or(0),
                size: m.body().map(str::len).unwrap_or(0),
            });
        }
        if new == 0 {
            break;
        }
    }
    out.truncate(limit);
    Ok(out)
}

/// Moves every dead letter back to `queue_url`: send first, then delete, so a crash in
/// between duplicates (harmless: the router is idempotent) but never loses a message.
pub async fn dlq_redrive(
    sqs: &Sqs,
    dlq_url: &str,
    queue_url: &str,
    mut progress: impl FnMut(usize),
) -> Result<usize, AdminError> {
    let mut moved = 0;
    loop {
        let resp = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .map_err(|e| sqs_err("ReceiveMessage", &e))?;
        let messages = resp.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                continue;
            };
            sqs.send_message()
                .queue_url(queue_url)
                .message_body(body)
                .send()
                .await
                .map_err(|e| sqs_err("SendMessage", &e))?;
            sqs.delete_message()
                .queue_url(dlq_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|e| sqs_err("DeleteMessage", &e))?;
            moved += 1;
            progress(moved);
        }
    }
    Ok(moved)
}
