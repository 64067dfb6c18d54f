//! `relay tenants`: apply a relay.toml to the AWS table, list tenants.

use super::*;

impl TenantsCommand {
    pub async fn run(self, _clock: Clock) -> anyhow::Result<()> {
        match self {
            TenantsCommand::Apply {
                file,
                aws,
                kms_key_id,
            } => {
                let config = read_config(&file)?;
                let (clients, table) = aws_clients(&aws).await?;
                for w in &config.warnings {
                    println!("  warning: {w}");
                }
                let report = relay_aws::admin::apply_tenants(
                    &clients.dynamo,
                    &clients.secrets(Some(kms_key_id)),
                    &table,
                    &config,
                    |line| println!("  {line}"),
                )
                .await?;
                println!(
                    "applied to {table}: {} Meta app(s), {} tenant(s), {} channel(s), {} API key(s); removed {} channel(s), {} API key(s){}",
                    report.meta_apps,
                    report.tenants,
                    report.channels,
                    report.api_keys,
                    report.removed_channels,
                    report.removed_api_keys,
                    if report.created_pseudonym_key {
                        "; created the pseudonymisation key"
                    } else {
                        ""
                    }
                );
                Ok(())
            }
            TenantsCommand::List {
                config,
                aws,
                aws_args,
            } => {
                if aws {
                    let (clients, table) = aws_clients(&aws_args).await?;
                    for t in relay_aws::admin::list_tenants(&clients.dynamo, &table).await? {
                        println!(
                            "{}\t{}\t{} channel(s)\t{} API key(s)",
                            t.id, t.name, t.channels, t.api_keys
                        );
                    }
                } else {
                    for t in read_config(&config)?.tenants {
                        println!(
                            "{}\t{}\t{} channel(s)\t{} API key(s)",
                            t.tenant.id,
                            t.tenant.name,
                            t.channels.len(),
                            t.api_key_digests.len()
                        );
                    }
                }
                Ok(())
            }
        }
    }
}
