//! `relay usage`: what WhatsApp charges a tenant in a month, counted from the pricing of status
//! webhooks, with an estimate at the tenant's rates (the same numbers as `GET /v1/usage`).

use crate::{Target, load_serve_config};
use anyhow::Context;
use relay_core::Clock;
use relay_core::ids::TenantId;
use relay_core::ports::Directory;
use relay_core::usage::UsageLedger;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct UsageArgs {
    #[arg(long)]
    tenant: String,
    /// The month, like 2026-12 (Europe/Berlin). Default: this month.
    #[arg(long)]
    month: Option<String>,
    /// Print the JSON of `GET /v1/usage` instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
    /// The relay.toml with the tenant's rates (locally). Default: ./relay.toml if it exists,
    /// else the built-in demo.
    #[arg(long, short, conflicts_with = "aws")]
    config: Option<PathBuf>,
}

impl UsageArgs {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        let tenant = TenantId::parse(&self.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
        let month = match self.month {
            Some(m) if relay_core::usage::valid_month(&m) => m,
            Some(m) => anyhow::bail!("--month: {m:?} is not a month like 2026-12"),
            None => {
                relay_core::usage::month_of(clock.now()).context("the clock is out of range")?
            }
        };
        let (ledger, directory): (Arc<dyn UsageLedger>, Arc<dyn Directory>) = if self.target.aws {
            let (clients, table) = crate::aws_clients(&self.target.aws_args).await?;
            (
                Arc::new(clients.store(&table)),
                Arc::new(clients.directory(&table)),
            )
        } else {
            let (config, _) = load_serve_config(self.config.as_deref())?;
            let local = relay_embedded::Local::open(&self.target.data_dir, clock.clone())?;
            (
                local.store.clone(),
                Arc::new(relay_core::directory::StaticDirectory::from_config(&config)),
            )
        };
        let rates = directory
            .tenant(&tenant)
            .await?
            .with_context(|| format!("no tenant {tenant}"))?
            .policy
            .rates;
        let counts = ledger.usage(&tenant, &month).await?;
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&inbox_api::usage_json(&month, &counts, &rates))?
            );
            return Ok(());
        }
        let e = relay_core::usage::estimate(&counts, &rates);
        println!("{tenant}, {month} (Europe/Berlin)");
        if counts.is_empty() {
            println!("  no priced messages recorded");
            return Ok(());
        }
        println!(
            "  {:<16} {:<24} {:>9} {:>9} {:>8} {:>10}",
            "category", "type", "messages", "billable", "rate", "estimate"
        );
        for r in &e.rows {
            println!(
                "  {:<16} {:<24} {:>9} {:>9} {:>8} {:>10.2}",
                r.count.category,
                r.count.pricing_type,
                r.count.messages,
                r.count.billable,
                r.rate
                    .map(|x| format!("{x:.4}"))
                    .unwrap_or_else(|| "-".into()),
                r.estimate
            );
        }
        println!("  estimate: {:.2} {}", e.total, e.currency);
        if !e.unpriced.is_empty() {
            println!(
                "  no rate for: {} (not in the estimate; set [tenants.pricing] rates)",
                e.unpriced.join(", ")
            );
        }
        println!("  rates as of {}: {}", rates.as_of, rates.source);
        Ok(())
    }
}
