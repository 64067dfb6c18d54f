//! `relay templates`: a tenant's message templates, listed from the provider into the store
//! (what the web inbox offers when a conversation's 24-hour window is closed).

use crate::{Target, load_serve_config};
use anyhow::{Context, bail};
use clap::Subcommand;
use relay_core::Clock;
use relay_core::ids::TenantId;
use relay_core::ports::Directory;
use relay_core::templates::{TemplateStore, parse_template_list};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum TemplatesCommand {
    /// Fetch the channel's templates from the provider (360dialog: GET /v1/configs/templates;
    /// Meta: GET /{waba_id}/message_templates, the channel's waba_id) and store them; what the
    /// provider no longer lists is dropped. Safe to run again (e.g. hourly).
    Sync {
        #[arg(long)]
        tenant: String,
        /// The channel whose account's templates to fetch. Default (locally): the tenant's
        /// first channel; required with --aws.
        #[arg(long)]
        channel: Option<String>,
        #[command(flatten)]
        at: TemplateTarget,
    },
    /// The stored templates of a tenant: name, language, category, status, parameters.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        at: TemplateTarget,
    },
}

#[derive(clap::Args, Clone)]
pub struct TemplateTarget {
    #[command(flatten)]
    target: Target,
    /// The relay.toml with the tenant's channels (locally). Default: ./relay.toml if it
    /// exists, else the built-in demo.
    #[arg(long, short, conflicts_with = "aws")]
    config: Option<PathBuf>,
}

async fn open(
    at: &TemplateTarget,
    clock: &Clock,
) -> anyhow::Result<(Arc<dyn TemplateStore>, Arc<dyn Directory>)> {
    if at.target.aws {
        let (clients, table) = crate::aws_clients(&at.target.aws_args).await?;
        Ok((
            Arc::new(clients.store(&table)),
            Arc::new(clients.directory(&table)),
        ))
    } else {
        let (config, _) = load_serve_config(at.config.as_deref())?;
        let local = relay_embedded::Local::open(&at.target.data_dir, clock.clone())?;
        Ok((
            local.store.clone(),
            Arc::new(relay_core::directory::StaticDirectory::from_config(&config)),
        ))
    }
}

impl TemplatesCommand {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        match self {
            TemplatesCommand::Sync {
                tenant,
                channel,
                at,
            } => {
                let tenant =
                    TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
                let channel_id = match channel {
                    Some(c) => c,
                    None if !at.target.aws => {
                        let (config, source) = load_serve_config(at.config.as_deref())?;
                        config
                            .tenants
                            .iter()
                            .find(|t| t.tenant.id == tenant)
                            .with_context(|| format!("tenant {tenant} is not in {source}"))?
                            .channels
                            .first()
                            .map(|c| c.phone_number_id.clone())
                            .with_context(|| format!("tenant {tenant} has no channel"))?
                    }
                    None => bail!("--channel is required with --aws"),
                };
                let (store, directory) = open(&at, &clock).await?;
                let channel = directory
                    .channel(&channel_id)
                    .await?
                    .filter(|c| c.tenant_id == tenant)
                    .with_context(|| format!("tenant {tenant} has no channel {channel_id}"))?;
                let client =
                    relay_whatsapp::WhatsAppClient::new(std::time::Duration::from_secs(20));
                let list = client
                    .list_templates(&channel)
                    .await
                    .map_err(|e| anyhow::anyhow!("listing the templates failed: {e}"))?;
                let templates = parse_template_list(&list, clock.now());
                store.replace_templates(&tenant, &templates).await?;
                let approved = templates.iter().filter(|t| t.approved()).count();
                println!(
                    "{tenant}: {} template(s) stored, {approved} approved",
                    templates.len()
                );
                Ok(())
            }
            TemplatesCommand::List { tenant, at } => {
                let tenant =
                    TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
                let (store, _) = open(&at, &clock).await?;
                let list = store.templates(&tenant).await?;
                if list.is_empty() {
                    println!("tenant {tenant} has no stored templates (relay templates sync)");
                }
                for t in list {
                    println!(
                        "{}\t{}\t{}\t{}\t{} parameter(s)",
                        t.name, t.language, t.category, t.status, t.params
                    );
                }
                Ok(())
            }
        }
    }
}
