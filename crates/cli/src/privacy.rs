//! `relay contacts`, `relay quarantine` and their backends: export, erasure, the audit entries of an operator.

use super::*;

impl QuarantineCommand {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        match self {
            QuarantineCommand::List {
                target,
                limit,
                show_payload,
                privacy,
            } => {
                let items = if target.aws && !show_payload {
                    let (clients, table) = aws_clients(&target.aws_args).await?;
                    relay_core::ports::InboxReads::list_quarantine(
                        &clients.store(&table),
                        limit,
                        clock.now(),
                    )
                    .await?
                } else {
                    // Payloads are sealed: read through the sealing store.
                    let backends = privacy_for(&target, &privacy, &clock).await?;
                    backends.store.list_quarantine(limit, clock.now()).await?
                };
                if items.is_empty() {
                    println!("no quarantined events");
                }
                for q in items {
                    println!(
                        "{}\t{}\tphone_number_id {}\t{}",
                        q.received_at, q.key, q.phone_number_id, q.reason
                    );
                    if show_payload {
                        println!("{}", q.payload);
                    }
                }
                Ok(())
            }
        }
    }
}

impl ContactsCommand {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        match self {
            ContactsCommand::Export {
                contact_id,
                tenant,
                target,
                privacy,
                out,
            } => {
                let (t, c) = parse_subject(&tenant, &contact_id)?;
                let backends = privacy_for(&target, &privacy, &clock).await?;
                let result = backends.privacy()?.export(&t, &c, clock.now()).await;
                audit_cli(&backends, &t, "contact.export", &c, result.is_ok()).await;
                let doc = result?.with_context(|| {
                    format!("no contact {c} in tenant {t} (unknown, erased or expired)")
                })?;
                let text = serde_json::to_string_pretty(&doc)?;
                match out {
                    Some(path) => {
                        write_private(&path, text.as_bytes())?;
                        eprintln!("exported contact {c} to {}", path.display());
                    }
                    None => println!("{text}"),
                }
                Ok(())
            }
            ContactsCommand::Erase {
                contact_id,
                tenant,
                target,
                privacy,
                yes,
            } => {
                let (t, c) = parse_subject(&tenant, &contact_id)?;
                if !yes {
                    anyhow::bail!(
                        "erasing {c} cannot be undone: every message, status, consent entry and its data key are destroyed. Run again with --yes to confirm."
                    );
                }
                let backends = privacy_for(&target, &privacy, &clock).await?;
                let result = backends.privacy()?.erase(&t, &c, clock.now()).await;
                audit_cli(&backends, &t, "contact.erase", &c, result.is_ok()).await;
                let receipt = result
                    .context("erasure stopped part-way; run the same command again to finish it")?;
                println!("{}", serde_json::to_string_pretty(&receipt)?);
                Ok(())
            }
        }
    }
}

/// The backends of export, erasure and the audit log, locally or on AWS, built by the same
/// composition root as the functions.
pub(crate) async fn privacy_for(
    target: &Target,
    p: &PrivacyArgs,
    clock: &Clock,
) -> anyhow::Result<relay_core::backends::Backends> {
    let mut backends = if target.aws {
        let a = &target.aws_args;
        let table = a
            .table
            .clone()
            .context("--table (or RELAY_TABLE) is required with --aws")?;
        let required = [
            ("KEYS_TABLE", &p.keys_table, "--keys-table"),
            ("RELAY_KMS_KEY_ID", &p.kms_key, "--kms-key"),
            ("AUDIT_TABLE", &p.audit_table, "--audit-table"),
            ("MEDIA_BUCKET", &p.media_bucket, "--media-bucket"),
        ];
        for (var, value, flag) in required {
            anyhow::ensure!(value.is_some(), "{flag} (or {var}) is required with --aws");
        }
        let lookup = |k: &str| match k {
            "RELAY_TABLE" => Some(table.clone()),
            _ => required
                .iter()
                .find(|(var, _, _)| *var == k)
                .and_then(|(_, v, _)| (*v).clone()),
        };
        let settings = relay_aws::Settings::from_lookup(&lookup)?;
        let sdk = relay_aws::sdk_config(a.endpoint_url.as_deref()).await;
        relay_aws::Aws::new(settings, &sdk)
            .backends_with_media(clock.clone())
            .await?
    } else {
        // The tenants do not matter here; the limits (audit retention) come from relay.toml.
        let (config, _) = load_serve_config(None)?;
        serve::Local::open_with_key_backup(
            &target.data_dir,
            clock.clone(),
            config.server.key_backup_dir.as_ref().map(PathBuf::from),
        )?
        .backends(&config)
    };
    if let Some(days) = p.audit_retention_days {
        anyhow::ensure!(
            (1..=3650).contains(&days),
            "--audit-retention-days must be 1 to 3650"
        );
        backends.limits.audit_retention_days = days;
    }
    Ok(backends)
}

pub(crate) fn parse_subject(
    tenant: &str,
    contact: &str,
) -> anyhow::Result<(relay_core::ids::TenantId, relay_core::ids::ContactId)> {
    let t =
        relay_core::ids::TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let c = relay_core::ids::ContactId::parse(contact)
        .map_err(|e| anyhow::anyhow!("contact id: {e}"))?;
    Ok((t, c))
}

/// Records an operator's action in the audit log (the action is done; a failure is reported).
pub(crate) async fn audit_cli(
    backends: &relay_core::backends::Backends,
    tenant: &relay_core::ids::TenantId,
    action: &str,
    target: &relay_core::ids::ContactId,
    ok: bool,
) {
    let clock = &backends.clock;
    let at_ms = clock.now_ms();
    let now = at_ms.div_euclid(1000);
    let entry = relay_core::records::AuditEntry {
        at_ms,
        tenant: tenant.clone(),
        actor: "cli".into(),
        action: action.into(),
        target: Some(target.to_string()),
        result: if ok { 200 } else { 500 },
        expires_at: now + backends.limits.audit_retention_secs(),
    };
    let written = match backends.audit() {
        Ok(audit) => audit.append(&entry).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        eprintln!("warning: the audit entry could not be written: {e}");
    }
}

/// Writes a file only its owner can read (it holds personal data).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
