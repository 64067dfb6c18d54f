//! `relay backup` and `relay restore`: the local data directory backed up so that erasure
//! still reaches every copy (relay_embedded::backup; docs/privacy.md).

use super::*;
use relay_embedded::backup;

#[derive(Args)]
pub struct BackupArgs {
    /// The content backup to write (a new file; e.g. relay-2026-12-01.db).
    #[arg(long, short)]
    out: PathBuf,
    /// The key backup directory (default: [server].key_backup_dir of ./relay.toml). Keep it
    /// apart from the content backups, best on another disk or host.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// The local data directory (default: [server].data_dir of the configuration, else .relay).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The configuration (default: ./relay.toml if it exists).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The content backup (a file `relay backup --out` wrote).
    #[arg(long)]
    from: PathBuf,
    /// The key backup directory (default: [server].key_backup_dir of ./relay.toml).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// The data directory to restore into; it must not hold a relay.db.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The configuration (default: ./relay.toml if it exists).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// The data directory and key backup directory: the flags, else the configuration's.
fn dirs(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    keys: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf, RelayConfig)> {
    let (config, _) = load_serve_config(config)?;
    let data = data_dir.unwrap_or_else(|| PathBuf::from(config.data_dir()));
    let keys = keys
        .or_else(|| config.server.key_backup_dir.as_ref().map(PathBuf::from))
        .context("--keys (or [server] key_backup_dir) names the key backup directory")?;
    Ok((data, keys, config))
}

impl BackupArgs {
    pub fn run(self, _clock: Clock) -> anyhow::Result<()> {
        let (data, keys, _) = dirs(self.config.as_deref(), self.data_dir, self.keys)?;
        anyhow::ensure!(
            data.join("relay.db").exists(),
            "no relay.db in {} (the data directory)",
            data.display()
        );
        let contacts = backup::backup_content(&data, &self.out)?;
        eprintln!(
            "content backup: {} ({contacts} contact(s), no data keys)",
            self.out.display()
        );
        let n = backup::backup_keys(&data, &keys)?;
        eprintln!("key backup: {} ({n} data key(s))", keys.display());
        Ok(())
    }
}

impl RestoreArgs {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        let (data, keys, config) = dirs(self.config.as_deref(), self.data_dir, self.keys)?;
        let n = backup::restore(&self.from, &keys, &data)?;
        eprintln!(
            "restored {} into {} ({n} data key(s))",
            self.from.display(),
            data.display()
        );
        // Contacts erased since the content backup: their key is gone; erase their rows too.
        let local = serve::Local::open_with_key_backup(&data, clock.clone(), Some(keys))?;
        let privacy = local.backends(&config).privacy()?;
        let orphans = local.contacts_without_keys()?;
        for (tenant, contact) in &orphans {
            privacy
                .erase(tenant, contact, clock.now())
                .await
                .with_context(|| format!("erasing {contact} (erased since the backup) stopped part-way; run the restore's erasure again with `relay contacts erase {contact} --tenant {tenant} --yes`"))?;
        }
        if !orphans.is_empty() {
            eprintln!(
                "erased {} contact(s) whose erasure came after the backup",
                orphans.len()
            );
        }
        println!(
            "restored; start it with: relay serve --data-dir {}",
            data.display()
        );
        Ok(())
    }
}
