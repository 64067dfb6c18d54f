//! Sealed media files under `data_dir/media/{tenant}/{contact}/{media_id}` (local mode's S3).
//! Written to a temporary name and renamed when complete, so a crash never leaves half a file
//! under a real name; directories 0700, files 0600.

use async_trait::async_trait;
use relay_core::media::{BlobError, BlobReader, BlobStore, BlobWriter};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct FileBlobStore {
    root: PathBuf,
}

fn io(e: std::io::Error) -> BlobError {
    // io errors name the operation and OS error, not file contents.
    BlobError::Unavailable(format!("file system: {}", e.kind()))
}

impl FileBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileBlobStore { root: root.into() }
    }

    /// The path of a key; only keys the relay makes (ids of letters, digits, `-`, `_`).
    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let key = key.trim_end_matches('/');
        let ok = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(BlobError::Unavailable("not a blob key".into()));
        }
        Ok(self.root.join(key))
    }
}

async fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
    }
    Ok(())
}

struct FileWriter {
    tmp: PathBuf,
    target: PathBuf,
    file: tokio::fs::File,
}

#[async_trait]
impl BlobWriter for FileWriter {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), BlobError> {
        self.file.write_all(&bytes).await.map_err(io)
    }

    async fn finish(mut self: Box<Self>) -> Result<(), BlobError> {
        self.file.flush().await.map_err(io)?;
        self.file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&self.tmp, &self.target).await.map_err(io)
    }

    async fn abort(self: Box<Self>) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

struct FileReader {
    file: tokio::fs::File,
}

#[async_trait]
impl BlobReader for FileReader {
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, BlobError> {
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            let got = self.file.read(&mut buf[filled..]).await.map_err(io)?;
            if got == 0 {
                break;
            }
            filled += got;
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

#[async_trait]
impl BlobStore for FileBlobStore {
    async fn begin(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        let target = self.path(key)?;
        let dir = target
            .parent()
            .ok_or_else(|| BlobError::Unavailable("not a blob key".into()))?;
        create_private_dir(dir).await.map_err(io)?;
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| BlobError::Unavailable(e.to_string()))?;
        let tmp = target.with_extension(format!("part-{}", hex::encode(suffix)));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(&tmp).await.map_err(io)?;
        Ok(Box::new(FileWriter { tmp, target, file }))
    }

    async fn open(&self, key: &str) -> Result<Option<Box<dyn BlobReader>>, BlobError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => Ok(Some(Box::new(FileReader { file }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let dir = self.path(prefix)?;
        let mut n = 0;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            tokio::fs::remove_file(entry.path()).await.map_err(io)?;
            n += 1;
        }
        let _ = tokio::fs::remove_dir(&dir).await;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_written_whole_read_back_and_deleted_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::new(dir.path());
        let mut w = store.begin("t/c_1/md_a").await.unwrap();
        w.write(b"hello ".to_vec()).await.unwrap();
        assert!(
            store.open("t/c_1/md_a").await.unwrap().is_none(),
            "not visible before finish"
        );
        w.write(b"world".to_vec()).await.unwrap();
        w.finish().await.unwrap();
        let mut r = store.open("t/c_1/md_a").await.unwrap().unwrap();
        assert_eq!(r.read(6).await.unwrap(), b"hello ");
        assert_eq!(r.read(100).await.unwrap(), b"world");
        assert!(r.read(1).await.unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("t/c_1/md_a"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let w = store.begin("t/c_1/md_b").await.unwrap();
        w.abort().await;
        assert_eq!(
            std::fs::read_dir(dir.path().join("t/c_1")).unwrap().count(),
            1,
            "an aborted write leaves nothing"
        );
        assert_eq!(store.delete_prefix("t/c_1/").await.unwrap(), 1);
        assert!(store.open("t/c_1/md_a").await.unwrap().is_none());
        assert_eq!(
            store.delete_prefix("t/c_1/").await.unwrap(),
            0,
            "idempotent"
        );
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::new(dir.path());
        for bad in ["../x", "t/../../x", "/etc/passwd", "t//x", "t/c.1/x", ""] {
            assert!(store.begin(bad).await.is_err(), "{bad:?}");
            assert!(store.open(bad).await.is_err(), "{bad:?}");
        }
    }
}
