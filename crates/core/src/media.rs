//! Media files (prescription photos, PDFs, voice notes): what the relay records about them,
//! where the bytes go (a [`BlobStore`]: S3 on AWS, files under `data_dir` locally), and how
//! they are sealed on the way — chunk by chunk under the contact's data key, so a file is never
//! held whole in memory and erasing the contact shreds it like every other copy of its data.
//!
//! ```text
//! blob = "RLM1" ‖ u16 len ‖ keyref ‖ u16 len ‖ key_id ‖ chunk₀ ‖ chunk₁ ‖ …
//! chunkᵢ = nonce(12) ‖ AES-256-GCM(plaintext[i·64 KiB ..], aad = context ‖ i ‖ last?)
//! ```
//!
//! The chunk index and a last-chunk flag are bound into each chunk, so chunks cannot be
//! reordered, dropped or the file truncated without the open failing.

use crate::crypto::{CryptoError, Keyring, Sealer};
use crate::ids::TenantId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes of one sealed full chunk in a blob.
pub const SEALED_CHUNK: usize = 12 + CHUNK + 16;
/// The largest file fetched unless configured otherwise (WhatsApp documents go up to 100 MB).
pub const DEFAULT_MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;
const MAGIC: &[u8; 4] = b"RLM1";
const PURPOSE: &str = "media";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    /// Stored with the message; the file is being fetched.
    Pending,
    Available,
    /// Will not become available; `reason` says why.
    Failed,
    /// Was stored, and deleted once its E-Rezept codes were read (the tenant's
    /// `delete_prescription_images_after_decode`); the tokens stay with the message.
    Deleted,
}

/// The relay's record of a message's file. No personal data: ids, type, size, a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The id the inbox API serves it under: `md_` + the message's row key.
    pub media_id: String,
    pub status: MediaStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Plaintext bytes, once available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the sealed bytes are in the blob store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
}

impl MediaInfo {
    pub fn pending(message_key: &str, mime_type: Option<String>) -> Self {
        MediaInfo {
            media_id: media_id(message_key),
            status: MediaStatus::Pending,
            mime_type,
            size: None,
            reason: None,
            object_key: None,
        }
    }
}

pub fn media_id(message_key: &str) -> String {
    format!("md_{message_key}")
}

/// The message row key a media id names, if it is one of ours.
pub fn message_key_of(media_id: &str) -> Option<&str> {
    media_id
        .strip_prefix("md_")
        .filter(|k| !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Where a contact's file is kept: under the contact's prefix, so erasure deletes by prefix.
pub fn object_key(tenant: &TenantId, contact: &str, media_id: &str) -> String {
    format!("{tenant}/{contact}/{media_id}")
}

pub fn contact_prefix(tenant: &TenantId, contact: &str) -> String {
    format!("{tenant}/{contact}/")
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
}

/// Sealed file bytes by key. Adapters: S3 (multipart, SSE-KMS), files under `data_dir`.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Starts writing an object; nothing is visible under `key` until `finish`.
    async fn begin(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError>;
    async fn open(&self, key: &str) -> Result<Option<Box<dyn BlobReader>>, BlobError>;
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Deletes every object under `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError>;
}

#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), BlobError>;
    async fn finish(self: Box<Self>) -> Result<(), BlobError>;
    async fn abort(self: Box<Self>);
}

#[async_trait]
pub trait BlobReader: Send {
    /// The next `n` bytes (fewer only at the end; empty at the end).
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, BlobError>;
}

fn chunk_aad(base: &[u8], index: u64, last: bool) -> Vec<u8> {
    let mut aad = base.to_vec();
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

/// Seals a file chunk by chunk under a contact's key, hashing the plaintext as it goes.
pub struct FileSealer {
    sealer: Sealer,
    context: Vec<u8>,
    buffer: Vec<u8>,
    index: u64,
    size: u64,
    sha256: sha2::Sha256,
    header_written: bool,
}

impl FileSealer {
    /// `media_id` is bound into every chunk: a file cannot be swapped for another.
    pub fn new(sealer: Sealer, media_id: &str) -> Self {
        let context = sealer.context(PURPOSE, media_id);
        FileSealer {
            sealer,
            context,
            buffer: Vec::with_capacity(CHUNK),
            index: 0,
            size: 0,
            sha256: <sha2::Sha256 as sha2::Digest>::new(),
            header_written: false,
        }
    }

    fn header(&self) -> Vec<u8> {
        let (keyref, key_id) = (self.sealer.keyref(), self.sealer.key_id());
        let mut h = MAGIC.to_vec();
        for part in [keyref, key_id] {
            h.extend_from_slice(&(part.len() as u16).to_be_bytes());
            h.extend_from_slice(part.as_bytes());
        }
        h
    }

    /// Takes plaintext; returns sealed bytes ready to write (possibly none yet).
    pub fn update(&mut self, mut data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        self.sha256.update(data);
        self.size += data.len() as u64;
        let mut out = Vec::new();
        if !self.header_written {
            out.extend(self.header());
            self.header_written = true;
        }
        while !data.is_empty() {
            let take = (CHUNK - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            // A full chunk is sealed only when more follows, so the last one is known.
            if self.buffer.len() == CHUNK && !data.is_empty() {
                out.extend(self.seal_buffer(false));
            }
        }
        out
    }

    fn seal_buffer(&mut self, last: bool) -> Vec<u8> {
        let aad = chunk_aad(&self.context, self.index, last);
        let sealed = self.sealer.seal_raw(&self.buffer, &aad);
        self.index += 1;
        self.buffer.clear();
        sealed
    }

    /// The last sealed bytes, the plaintext size and its SHA-256.
    pub fn finish(mut self) -> (Vec<u8>, u64, [u8; 32]) {
        use sha2::Digest;
        let mut out = Vec::new();
        if !self.header_written {
            out.extend(self.header());
        }
        // A full buffered chunk may still be waiting to see whether it is the last: it is.
        out.extend(self.seal_buffer(true));
        (out, self.size, self.sha256.finalize().into())
    }
}

/// Opens a sealed file chunk by chunk.
pub struct FileOpener {
    key: std::sync::Arc<crate::crypto::DataKey>,
    context: Vec<u8>,
    index: u64,
    chunks: u64,
}

impl FileOpener {
    /// Reads the blob's header and finds its key (`Destroyed` after erasure). `size` is the
    /// plaintext size recorded with the message.
    pub async fn new(
        keys: &Keyring,
        tenant: &TenantId,
        media_id: &str,
        size: u64,
        reader: &mut dyn BlobReader,
    ) -> Result<Self, MediaError> {
        let read_part = async |reader: &mut dyn BlobReader| -> Result<String, MediaError> {
            let len = reader.read(2).await?;
            let len: [u8; 2] = len.try_into().map_err(|_| MediaError::Corrupt)?;
            let part = reader.read(u16::from_be_bytes(len) as usize).await?;
            String::from_utf8(part).map_err(|_| MediaError::Corrupt)
        };
        if reader.read(4).await? != MAGIC {
            return Err(MediaError::Corrupt);
        }
        let keyref = read_part(reader).await?;
        let key_id = read_part(reader).await?;
        let (key, context) = keys
            .key_for(tenant, &keyref, &key_id, PURPOSE, media_id)
            .await?;
        Ok(FileOpener {
            key,
            context,
            index: 0,
            chunks: size.div_ceil(CHUNK as u64).max(1),
        })
    }

    /// The next plaintext chunk, `None` at the end.
    pub async fn next(
        &mut self,
        reader: &mut dyn BlobReader,
    ) -> Result<Option<Vec<u8>>, MediaError> {
        if self.index >= self.chunks {
            return Ok(None);
        }
        let sealed = reader.read(SEALED_CHUNK).await?;
        let last = self.index + 1 == self.chunks;
        let aad = chunk_aad(&self.context, self.index, last);
        let plain = crate::crypto::open_raw(&self.key, &sealed, &aad)?;
        self.index += 1;
        Ok(Some(plain))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("the stored file is damaged")]
    Corrupt,
}

/// A blob store in memory (tests).
#[derive(Default, Clone)]
pub struct MemoryBlobStore {
    objects: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
}

impl MemoryBlobStore {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

struct MemoryWriter {
    store: MemoryBlobStore,
    key: String,
    bytes: Vec<u8>,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.bytes.extend(bytes);
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<(), BlobError> {
        self.store
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.key, self.bytes);
        Ok(())
    }
    async fn abort(self: Box<Self>) {}
}

/// Reads a byte vector piecewise.
pub struct SliceReader {
    bytes: Vec<u8>,
    at: usize,
}

impl SliceReader {
    pub fn new(bytes: Vec<u8>) -> Self {
        SliceReader { bytes, at: 0 }
    }
}

#[async_trait]
impl BlobReader for SliceReader {
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, BlobError> {
        let end = (self.at + n).min(self.bytes.len());
        let out = self.bytes[self.at..end].to_vec();
        self.at = end;
        Ok(out)
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn begin(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            key: key.to_owned(),
            bytes: Vec::new(),
        }))
    }
    async fn open(&self, key: &str) -> Result<Option<Box<dyn BlobReader>>, BlobError> {
        Ok(self
            .get(key)
            .map(|b| Box::new(SliceReader::new(b)) as Box<dyn BlobReader>))
    }
    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let before = objects.len();
        objects.retain(|k, _| !k.starts_with(prefix));
        Ok(before - objects.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn seal_file(
        keys: &Keyring,
        t: &TenantId,
        data: &[u8],
        pieces: usize,
    ) -> (Vec<u8>, u64, [u8; 32]) {
        let s = block_on(keys.sealer(t, "c_1", None)).unwrap();
        let mut f = FileSealer::new(s, "md_x");
        let mut out = Vec::new();
        for part in data.chunks((data.len() / pieces.max(1)).max(1)) {
            out.extend(f.update(part));
        }
        let (tail, size, hash) = f.finish();
        out.extend(tail);
        (out, size, hash)
    }

    fn open_file(
        keys: &Keyring,
        t: &TenantId,
        blob: Vec<u8>,
        size: u64,
        id: &str,
    ) -> Result<Vec<u8>, MediaError> {
        block_on(async {
            let mut r = SliceReader::new(blob);
            let mut o = FileOpener::new(keys, t, id, size, &mut r).await?;
            let mut out = Vec::new();
            while let Some(c) = o.next(&mut r).await? {
                out.extend(c);
            }
            Ok(out)
        })
    }

    #[test]
    fn files_of_every_size_round_trip_and_hide_their_bytes() {
        let keys = Keyring::in_memory(crate::Clock::system());
        let t = TenantId::parse("a").unwrap();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for pieces in [1, 7] {
                let (blob, size, hash) = seal_file(&keys, &t, &data, pieces);
                assert_eq!(size, len as u64);
                assert_eq!(
                    hash,
                    <sha2::Sha256 as sha2::Digest>::digest(&data).as_slice()
                );
                if len > 64 {
                    assert!(
                        !blob.windows(64).any(|w| w == &data[..64]),
                        "plaintext in the blob"
                    );
                }
                assert_eq!(
                    open_file(&keys, &t, blob, size, "md_x").unwrap(),
                    data,
                    "{len}/{pieces}"
                );
            }
        }
    }

    #[test]
    fn truncated_reordered_or_swapped_files_do_not_open() {
        let keys = Keyring::in_memory(crate::Clock::system());
        let t = TenantId::parse("a").unwrap();
        let data = vec![7u8; 2 * CHUNK + 5];
        let (blob, size, _) = seal_file(&keys, &t, &data, 1);
        // Truncated to whole chunks, claiming a shorter size: the "last" flag does not match.
        let header = blob.len() - (2 * SEALED_CHUNK + 12 + 5 + 16);
        let cut = blob[..header + 2 * SEALED_CHUNK].to_vec();
        assert!(open_file(&keys, &t, cut, 2 * CHUNK as u64, "md_x").is_err());
        // Chunks swapped.
        let mut swapped = blob[..header].to_vec();
        swapped.extend_from_slice(&blob[header + SEALED_CHUNK..header + 2 * SEALED_CHUNK]);
        swapped.extend_from_slice(&blob[header..header + SEALED_CHUNK]);
        swapped.extend_from_slice(&blob[header + 2 * SEALED_CHUNK..]);
        assert!(open_file(&keys, &t, swapped, size, "md_x").is_err());
        // Served under another media id.
        assert!(open_file(&keys, &t, blob.clone(), size, "md_y").is_err());
        // After the key is destroyed.
        block_on(keys.destroy(&t, "c_1")).unwrap();
        assert!(matches!(
            open_file(&keys, &t, blob, size, "md_x"),
            Err(MediaError::Crypto(CryptoError::Destroyed))
        ));
    }

    #[test]
    fn media_ids_are_checked() {
        assert_eq!(message_key_of("md_abc123"), Some("abc123"));
        for bad in [
            "",
            "md_",
            "abc",
            "md_../x",
            "md_a/b",
            &format!("md_{}", "a".repeat(65)),
        ] {
            assert_eq!(message_key_of(bad), None, "{bad:?}");
        }
    }
}

/// The largest file of this type WhatsApp sends (`None`: a type it does not send): images
/// 5 MB, audio and video 16 MB, documents 100 MB (here bounded by `max_document`).
pub fn upload_limit(mime: &str, max_document: usize) -> Option<usize> {
    const MB: usize = 1024 * 1024;
    match mime {
        "image/jpeg" | "image/png" => Some(5 * MB),
        "audio/aac" | "audio/mp4" | "audio/mpeg" | "audio/amr" | "audio/ogg" | "video/mp4"
        | "video/3gpp" => Some(16 * MB),
        "application/pdf" | "text/plain" | "application/msword" => Some(max_document),
        m if m.starts_with("application/vnd.openxmlformats-officedocument.")
            || m.starts_with("application/vnd.ms-") =>
        {
            Some(max_document)
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A file the pharmacy sends: sealed under the contact's key into the blob store, recorded as
/// an upload (`mu_…`) that a reply names by `media_id`, expiring with the conversation. The
/// caller has checked the conversation, the type and the size.
#[allow(clippy::too_many_arguments)] // one upload's facts, each from the request
pub async fn store_upload(
    keys: &Keyring,
    blobs: &dyn BlobStore,
    store: &dyn crate::ports::MessageStore,
    tenant: &TenantId,
    contact: &crate::ids::ContactId,
    filename: Option<String>,
    mime: &str,
    bytes: &[u8],
    (now, expires_at): (i64, i64),
) -> Result<crate::records::Upload, UploadError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
    let media_id = format!("{}{}", crate::outbound::UPLOAD_PREFIX, hex::encode(id));
    let sealer = keys.contact_sealer(tenant, contact, expires_at).await?;
    let mut file = FileSealer::new(sealer, &media_id);
    let mut sealed = file.update(bytes);
    let (tail, size, _) = file.finish();
    sealed.extend(tail);
    let key = object_key(tenant, contact.as_str(), &media_id);
    let mut writer = blobs.begin(&key).await?;
    writer.write(sealed).await?;
    writer.finish().await?;
    let upload = crate::records::Upload {
        media_id: media_id.clone(),
        contact_id: contact.clone(),
        media: MediaInfo {
            media_id,
            status: MediaStatus::Available,
            mime_type: Some(mime.to_owned()),
            size: Some(size),
            reason: None,
            object_key: Some(key),
        },
        filename,
        created_at: now,
        expires_at,
    };
    crate::ports::MediaLedger::create_upload(store, tenant, &upload).await?;
    Ok(upload)
}
