//! Secrets at rest in the table, encrypted under the deployment's KMS key and bound to the
//! item and field they belong to (encryption context), so a ciphertext copied to another
//! item does not decrypt.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("no KMS key id configured (set --kms-key-id or RELAY_KMS_KEY_ID)")]
    NoKey,
    #[error("KMS {0}")]
    Call(String),
    #[error("a stored secret is not valid base64 or UTF-8")]
    Malformed,
}

#[derive(Clone, Debug)]
pub struct KmsSecrets {
    client: Client,
    key_id: Option<String>,
}

fn kms_error<E: aws_sdk_kms::error::ProvideErrorMetadata, R>(
    op: &str,
    e: &aws_sdk_kms::error::SdkError<E, R>,
) -> KmsError {
    use aws_sdk_kms::error::SdkError;
    let what = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failure (endpoint unreachable)".to_owned(),
        _ => "SDK error".to_owned(),
    };
    KmsError::Call(format!("{op}: {what}"))
}

impl KmsSecrets {
    /// `key_id` is needed to encrypt only; decryption finds the key in the ciphertext.
    pub fn new(client: Client, key_id: Option<String>) -> Self {
        KmsSecrets { client, key_id }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    pub async fn encrypt(
        &self,
        plaintext: &[u8],
        item: &str,
        field: &str,
    ) -> Result<String, KmsError> {
        let key = self.key_id.as_deref().ok_or(KmsError::NoKey)?;
        let out = self
            .client
            .encrypt()
            .key_id(key)
            .plaintext(Blob::new(plaintext))
            .encryption_context("relay:item", item)
            .encryption_context("relay:field", field)
            .send()
            .await
            .map_err(|e| kms_error("Encrypt", &e))?;
        let blob = out
            .ciphertext_blob()
            .ok_or(KmsError::Call("Encrypt: no ciphertext".into()))?;
        Ok(STANDARD.encode(blob.as_ref()))
    }

    pub async fn decrypt(
        &self,
        ciphertext_b64: &str,
        item: &str,
        field: &str,
    ) -> Result<Vec<u8>, KmsError> {
        let blob = STANDARD
            .decode(ciphertext_b64)
            .map_err(|_| KmsError::Malformed)?;
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .encryption_context("relay:item", item)
            .encryption_context("relay:field", field)
            .send()
            .await
            .map_err(|e| kms_error("Decrypt", &e))?;
        Ok(out
            .plaintext()
            .ok_or(KmsError::Call("Decrypt: no plaintext".into()))?
            .as_ref()
            .to_vec())
    }

    pub async fn decrypt_string(
        &self,
        ciphertext_b64: &str,
        item: &str,
        field: &str,
    ) -> Result<String, KmsError> {
        String::from_utf8(self.decrypt(ciphertext_b64, item, field).await?)
            .map_err(|_| KmsError::Malformed)
    }
}
