//! Sealed media files in S3: one object per file (`{tenant}/{contact}/{media_id}`), written as
//! a multipart upload in 8 MiB parts (never the whole file in memory), read as a stream.
//! The bucket adds SSE-KMS under the deployment key; the objects are already sealed under the
//! contact's data key (relay_core::media), so deleting that key shreds them too.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use relay_core::media::{BlobError, BlobReader, BlobStore, BlobWriter};

/// Multipart part size (S3's minimum is 5 MiB for all but the last part).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

fn s3_error<E: aws_sdk_s3::error::ProvideErrorMetadata, R>(
    op: &str,
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> BlobError {
    use aws_sdk_s3::error::SdkError;
    let what = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failure (endpoint unreachable)".to_owned(),
        _ => "SDK error".to_owned(),
    };
    BlobError::Unavailable(format!("S3 {op}: {what}"))
}

#[derive(Clone, Debug)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

impl S3BlobStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3BlobStore {
            client,
            bucket: bucket.into(),
        }
    }
}

struct S3Writer {
    store: S3BlobStore,
    key: String,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl S3Writer {
    async fn flush_part(&mut self) -> Result<(), BlobError> {
        let s = &self.store;
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let out = s
                    .client
                    .create_multipart_upload()
                    .bucket(&s.bucket)
                    .key(&self.key)
                    .send()
                    .await
                    .map_err(|e| s3_error("CreateMultipartUpload", &e))?;
                let id = out
                    .upload_id
                    .ok_or_else(|| BlobError::Unavailable("S3: no upload id".into()))?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as i32 + 1;
        let body = std::mem::take(&mut self.buffer);
        let out = s
            .client
            .upload_part()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("UploadPart", &e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.buffer.extend(bytes);
        if self.buffer.len() >= PART_BYTES {
            self.flush_part().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), BlobError> {
        let s = self.store.clone();
        if self.upload_id.is_none() {
            // Small file: one PutObject.
            s.client
                .put_object()
                .bucket(&s.bucket)
                .key(&self.key)
                .body(ByteStream::from(std::mem::take(&mut self.buffer)))
                .send()
                .await
                .map_err(|e| s3_error("PutObject", &e))?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.flush_part().await?;
        }
        let upload_id = self.upload_id.clone().unwrap_or_default();
        s.client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", &e))?;
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        if let Some(id) = &self.upload_id {
            let _ = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .upload_id(id)
                .send()
                .await;
        }
    }
}

struct S3Reader {
    body: ByteStream,
    pending: Vec<u8>,
}

#[async_trait]
impl BlobReader for S3Reader {
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, BlobError> {
        while self.pending.len() < n {
            match self.body.next().await {
                Some(Ok(bytes)) => self.pending.extend_from_slice(&bytes),
                Some(Err(_)) => {
                    return Err(BlobError::Unavailable(
                        "S3 GetObject: stream broke off".into(),
                    ));
                }
                None => break,
            }
        }
        let take = n.min(self.pending.len());
        let rest = self.pending.split_off(take);
        Ok(std::mem::replace(&mut self.pending, rest))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn begin(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: key.to_owned(),
            buffer: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
        }))
    }

    async fn open(&self, key: &str) -> Result<Option<Box<dyn BlobReader>>, BlobError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Box::new(S3Reader {
                body: out.body,
                pending: Vec::new(),
            }))),
            Err(e) if e.as_service_error().is_some_and(|x| x.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_error("GetObject", &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", &e))?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let mut deleted = 0;
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", &e))?;
            let keys: Vec<ObjectIdentifier> = out
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if !keys.is_empty() {
                let n = keys.len();
                let delete = Delete::builder()
                    .set_objects(Some(keys))
                    .quiet(true)
                    .build()
                    .map_err(|_| BlobError::Unavailable("S3: delete request".into()))?;
                self.client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| s3_error("DeleteObjects", &e))?;
                deleted += n;
            }
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) => token = Some(t),
                _ => break,
            }
        }
        Ok(deleted)
    }
}
