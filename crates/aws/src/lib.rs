//! AWS adapters for the relay's ports: DynamoDB (store, directory), SQS (inbound queue) and
//! KMS (channel secrets, the pseudonymisation key). Also the shared wiring of the Lambda
//! `main`s: SDK configuration, typed settings from the environment, and the composition root
//! ([`Aws`]).
//!
//! Error messages carry SDK error codes only, never item values.

pub mod admin;
pub mod batch;
mod directory;
mod dynamo;
mod keys;
mod kms;
mod s3;
mod settings;
mod sqs;
mod wiring;

pub use directory::DynamoDirectory;
pub use dynamo::{DynamoMessageStore, DynamoStaffStore};
pub use keys::{DynamoAuditLog, DynamoKeyStore, KmsKeyWrapper};
pub use kms::KmsSecrets;
pub use s3::S3BlobStore;
pub use settings::{FUNCTION_ENV, FUNCTION_OPTIONAL_ENV, Settings, SettingsError};
pub use sqs::{SqsInboundQueue, SqsJobQueue};
pub use wiring::{Aws, WiringError};

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The region the relay is built for (data residency: Frankfurt).
pub const DEFAULT_REGION: &str = "eu-central-1";

/// Loads the SDK configuration from the environment (credentials chain, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`), defaulting the region to eu-central-1. `endpoint_url` overrides the
/// endpoint for every service (moto in tests, `--endpoint-url` in the CLI).
pub async fn sdk_config(endpoint_url: Option<&str>) -> SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(Region::new(DEFAULT_REGION));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Bounds on every AWS call. The SDK sets none but a connect timeout, so a call to a stalled
/// endpoint would hang until the Lambda's own timeout — the webhook-receiver must answer
/// 360dialog long before that. An attempt that does not answer in 3 s is retried (the SDK's
/// standard retry: 3 attempts with jittered backoff); the whole operation gives up after 10 s.
/// S3 transfers get longer attempts ([`Clients::s3`]). Found by the fault suite
/// (`tests/tests/faults.rs`), which stalls calls on their way to moto.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(3))
        .operation_timeout(std::time::Duration::from_secs(10))
        .build()
}

/// "Operation: ErrorCode" from an SDK error, without the error's message (which may echo
/// request values).
pub(crate) fn sdk_error<E, R>(op: &str, err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::SdkError;
    let what = match err {
        SdkError::ServiceError(e) => e.err().code().unwrap_or("service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failure (endpoint unreachable)".to_owned(),
        SdkError::ResponseError(_) => "unreadable response".to_owned(),
        SdkError::ConstructionFailure(_) => "request construction failed".to_owned(),
        _ => "unknown SDK error".to_owned(),
    };
    format!("{op}: {what}")
}

/// The SDK clients a function needs, built once in `main` and shared by cheap clones.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub kms: aws_sdk_kms::Client,
    /// S3's client is built on demand ([`Clients::s3`]): only the functions that touch media
    /// link its (large) endpoint rules.
    pub sdk: SdkConfig,
}

impl Clients {
    pub fn new(sdk: &SdkConfig) -> Self {
        Clients {
            dynamo: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            kms: aws_sdk_kms::Client::new(sdk),
            sdk: sdk.clone(),
        }
    }

    pub fn store(&self, table: &str) -> DynamoMessageStore {
        DynamoMessageStore::new(self.dynamo.clone(), table)
    }

    /// The keyring of personal-data keys: wrapped keys in `keys_table`, KMS key `kms_key_id`.
    pub fn keyring(
        &self,
        keys_table: &str,
        kms_key_id: &str,
        clock: relay_core::Clock,
    ) -> relay_core::crypto::Keyring {
        relay_core::crypto::Keyring::new(
            std::sync::Arc::new(DynamoKeyStore::new(self.dynamo.clone(), keys_table)),
            std::sync::Arc::new(KmsKeyWrapper::new(self.kms.clone(), kms_key_id)),
            clock,
        )
    }

    /// The message store with every personal field sealed under `keyring`.
    pub fn sealed_store(
        &self,
        table: &str,
        keyring: std::sync::Arc<relay_core::crypto::Keyring>,
    ) -> relay_core::sealed::SealedStore {
        relay_core::sealed::SealedStore::new(std::sync::Arc::new(self.store(table)), keyring)
    }

    /// An S3 client. Against an endpoint override (moto, a local S3) buckets are addressed by
    /// path; on AWS the default virtual-hosted style.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(self.sdk.endpoint_url().is_some())
                // A part of a multipart upload is 8 MiB: give it time on a slow link.
                .timeout_config(
                    timeouts()
                        .to_builder()
                        .operation_attempt_timeout(std::time::Duration::from_secs(60))
                        .operation_timeout(std::time::Duration::from_secs(180))
                        .build(),
                )
                .build(),
        )
    }

    pub fn blob_store(&self, bucket: &str) -> S3BlobStore {
        S3BlobStore::new(self.s3(), bucket)
    }

    pub fn audit_log(&self, table: &str) -> DynamoAuditLog {
        DynamoAuditLog::new(self.dynamo.clone(), table)
    }

    /// `kms_key_id` is only needed by writers (`relay tenants apply`).
    pub fn secrets(&self, kms_key_id: Option<String>) -> KmsSecrets {
        KmsSecrets::new(self.kms.clone(), kms_key_id)
    }

    pub fn staff_store(&self, table: &str) -> DynamoStaffStore {
        DynamoStaffStore::new(self.dynamo.clone(), table)
    }

    pub fn directory(&self, table: &str) -> DynamoDirectory {
        DynamoDirectory::new(self.dynamo.clone(), table, self.secrets(None))
    }

    pub fn inbound_queue(&self, url: &str) -> SqsInboundQueue {
        SqsInboundQueue::new(self.sqs.clone(), url)
    }

    pub fn job_queue(&self, url: &str, dlq_url: Option<String>) -> SqsJobQueue {
        SqsJobQueue::new(self.sqs.clone(), url, dlq_url)
    }

    /// The pseudonymiser of this deployment (its key is read from the table once).
    pub async fn pseudonymizer(
        &self,
        table: &str,
    ) -> Result<relay_core::ids::Pseudonymizer, admin::AdminError> {
        let key = admin::load_pseudonym_key(&self.dynamo, &self.secrets(None), table).await?;
        Ok(relay_core::ids::Pseudonymizer::new(key))
    }
}
