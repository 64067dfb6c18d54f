//! `relay`: run the pharmacy WhatsApp relay on one machine, and administer it locally or on AWS.

mod backup;
mod demo;
mod dlq;
mod http;
mod metrics;
mod privacy;
mod serve;
mod staff;
mod templates;
mod tenants;
mod tls;
mod usage;

use privacy::privacy_for;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relay_core::Clock;
use relay_core::config::RelayConfig;
use relay_core::ports::store_roles::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "relay",
    version,
    about = "GDPR-first WhatsApp Business relay for pharmacies",
    long_about = "GDPR-first WhatsApp Business relay for pharmacies.\n\n\
        `relay serve` runs the whole pipeline on this machine (SQLite store and queue under the\n\
        data directory; no AWS, no Docker). The other commands administer a relay: locally\n\
        (--data-dir) or a deployment on AWS (--aws with --table, etc.)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run webhook receiver, router and inbox API on one machine.
    Serve(ServeArgs),
    /// Check a relay.toml and say what is wrong with it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Tenants (pharmacies) and their channels.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Events that reached no tenant (unknown or mismatched phone number id).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// The inbound dead-letter queue: webhooks the router failed on repeatedly.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Data subject requests: export (GDPR Art. 15/20) or erase (Art. 17) one contact.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// Staff accounts of the web inbox (personal sign-ins).
    Staff {
        #[command(subcommand)]
        command: staff::StaffCommand,
    },
    /// Message templates (what the web inbox offers outside the 24-hour window).
    Templates {
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
    /// What WhatsApp charges a tenant in a month: messages by category and type, counted from
    /// status webhooks, with an estimate at the tenant's rates ([tenants.pricing]).
    Usage(usage::UsageArgs),
    /// Back up the local data directory while it serves: the content (without data keys) to
    /// --out, the data keys to the key backup directory. See docs/privacy.md.
    Backup(backup::BackupArgs),
    /// Restore a content backup and a key backup into an empty data directory; contacts erased
    /// since the content backup stay erased.
    Restore(backup::RestoreArgs),
    /// The audit log: who read or changed personal data, newest first.
    Audit {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        privacy: PrivacyArgs,
        /// Only this tenant's entries.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the personal-data keys and the audit log are on AWS (ignored locally).
#[derive(Args, Clone)]
struct PrivacyArgs {
    /// The DynamoDB table of wrapped data keys (with --aws).
    #[arg(long, env = "KEYS_TABLE")]
    keys_table: Option<String>,
    /// The KMS key that wraps data keys (with --aws).
    #[arg(long = "kms-key", env = "RELAY_KMS_KEY_ID")]
    kms_key: Option<String>,
    /// The audit log table (with --aws).
    #[arg(long, env = "AUDIT_TABLE")]
    audit_table: Option<String>,
    /// The media bucket (with --aws).
    #[arg(long, env = "MEDIA_BUCKET")]
    media_bucket: Option<String>,
    /// How long the audit entries of these commands are kept. Default: the deployment's
    /// (AUDIT_RETENTION_DAYS on AWS; [server].audit_retention_days of ./relay.toml locally).
    #[arg(long, env = "AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Print everything the relay holds about a contact, decrypted, as one JSON document.
    Export {
        /// The contact id (c_ + 32 hex digits), as the inbox API shows it.
        contact_id: String,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        privacy: PrivacyArgs,
        /// Write the document to this file (mode 0600) instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Erase a contact: destroy its data key, delete every item, print the receipt.
    /// Idempotent; run it again if it was interrupted.
    Erase {
        contact_id: String,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        privacy: PrivacyArgs,
        /// Confirm: erasure cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The configuration file. Default: ./relay.toml if it exists, else the built-in demo.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides [server].listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the database and key file live (overrides [server].data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log lines on stderr: "text" (coloured only on a terminal) or "json" (one object a
    /// line, for a log shipper).
    #[arg(long, env = "RELAY_LOG_FORMAT", default_value = "text")]
    log_format: relay_telemetry::LogFormat,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate; exit 1 with the field names of every problem.
    Check {
        #[arg(long, short, default_value = "relay.toml")]
        config: PathBuf,
    },
}

#[derive(Args, Clone)]
struct AwsArgs {
    /// The DynamoDB table of the deployment.
    #[arg(long, env = "RELAY_TABLE")]
    table: Option<String>,
    /// Endpoint override (e.g. a moto server: http://127.0.0.1:5000).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
}

#[derive(Args, Clone)]
struct Target {
    /// Act on an AWS deployment instead of the local data directory.
    #[arg(long)]
    aws: bool,
    /// The local data directory.
    #[arg(long, default_value = ".relay", conflicts_with = "aws")]
    data_dir: PathBuf,
    #[command(flatten)]
    aws_args: AwsArgs,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Write the tenants and channels of a relay.toml to the AWS table. API keys are stored
    /// as SHA-256 only, channel secrets KMS-encrypted. Idempotent.
    Apply {
        #[arg(long, short)]
        file: PathBuf,
        #[command(flatten)]
        aws: AwsArgs,
        /// KMS key to encrypt channel secrets with.
        #[arg(long, env = "RELAY_KMS_KEY_ID")]
        kms_key_id: String,
    },
    /// List tenants: of a relay.toml (default), or of an AWS table with --aws.
    List {
        #[arg(long, short, default_value = "relay.toml")]
        config: PathBuf,
        #[arg(long)]
        aws: bool,
        #[command(flatten)]
        aws_args: AwsArgs,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Show quarantined events (newest first), without their content.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Include each event's payload, decrypted (it may contain personal data).
        #[arg(long)]
        show_payload: bool,
        #[command(flatten)]
        privacy: PrivacyArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Show dead letters: ids, receive counts, sizes (never content).
    List {
        #[command(flatten)]
        target: Target,
        /// Which local queue: "inbound" (webhooks) or "outbound" (replies, forwards).
        #[arg(long, default_value = "inbound")]
        queue: String,
        /// The dead-letter queue URL (with --aws).
        #[arg(long, env = "INBOUND_DLQ_URL")]
        dlq_url: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Move every dead letter back to the queue for another try.
    Redrive {
        #[command(flatten)]
        target: Target,
        /// Which local queue: "inbound" (webhooks) or "outbound" (replies, forwards).
        #[arg(long, default_value = "inbound")]
        queue: String,
        /// The dead-letter queue URL (with --aws).
        #[arg(long, env = "INBOUND_DLQ_URL")]
        dlq_url: Option<String>,
        /// The queue to move them to (with --aws).
        #[arg(long, env = "INBOUND_QUEUE_URL")]
        queue_url: Option<String>,
    },
}

fn read_config(path: &Path) -> anyhow::Result<RelayConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    RelayConfig::parse(&text, &|k| std::env::var(k).ok())
        .with_context(|| format!("{} is not usable", path.display()))
}

fn load_serve_config(explicit: Option<&Path>) -> anyhow::Result<(RelayConfig, String)> {
    match explicit {
        Some(p) => Ok((read_config(p)?, p.display().to_string())),
        None if Path::new("relay.toml").exists() => {
            Ok((read_config(Path::new("relay.toml"))?, "relay.toml".into()))
        }
        None => Ok((
            RelayConfig::demo(),
            "built-in demo (no relay.toml here)".into(),
        )),
    }
}

async fn aws_clients(args: &AwsArgs) -> anyhow::Result<(relay_aws::Clients, String)> {
    let table = args
        .table
        .clone()
        .context("--table (or RELAY_TABLE) is required with AWS")?;
    let sdk = relay_aws::sdk_config(args.endpoint_url.as_deref()).await;
    Ok((relay_aws::Clients::new(&sdk), table))
}

fn format_ms(ms: i64, clock: &Clock) -> String {
    format!("{}s ago", (clock.now_ms() - ms).max(0) / 1000)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse(), Clock::system()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, clock: Clock) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            relay_telemetry::init(args.log_format);
            let (config, source) = load_serve_config(args.config.as_deref())?;
            for w in &config.warnings {
                tracing::warn!(warning = %w, "configuration");
            }
            let listen: SocketAddr = match args.listen {
                Some(l) => l,
                None => config
                    .listen()
                    .parse()
                    .context("server.listen is not an address")?,
            };
            let data_dir = args
                .data_dir
                .unwrap_or_else(|| PathBuf::from(config.data_dir()));
            let demo = args.config.is_none() && !Path::new("relay.toml").exists();
            if demo && !listen.ip().is_loopback() {
                anyhow::bail!(
                    "the built-in demo serves only on a loopback address (its staff password is \
                     public): listen on 127.0.0.1, or write a relay.toml to serve on {listen}"
                );
            }
            let running = serve::start(&config, listen, data_dir.clone(), demo).await?;
            let scheme = if config.server.tls.is_some() {
                "https"
            } else {
                "http"
            };
            println!(
                "relay serving on {scheme}://{} (config: {source}; data: {})",
                running.addr,
                data_dir.display()
            );
            println!(
                "  webhooks:  POST {scheme}://{}/webhooks/whatsapp/<phone_number_id>",
                running.addr
            );
            println!(
                "  inbox API: GET  {scheme}://{}/v1/conversations  (Authorization: Bearer <api key>)",
                running.addr
            );
            println!(
                "  web inbox: {scheme}://{}/  (staff sign in: relay staff add)",
                running.addr
            );
            if demo {
                println!(
                    "  demo staff sign-in: {} / {}",
                    serve::DEMO_STAFF_EMAIL,
                    serve::DEMO_STAFF_PASSWORD
                );
                println!(
                    "  demo customer (write as a customer): {scheme}://{}/demo/customer",
                    running.addr
                );
            }
            for t in &config.tenants {
                let ids: Vec<&str> = t
                    .channels
                    .iter()
                    .map(|c| c.phone_number_id.as_str())
                    .collect();
                println!("  tenant {}: channels {}", t.tenant.id, ids.join(", "));
            }
            println!("Press Ctrl-C to stop.");
            let shutdown = running.shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                let _ = shutdown.send(true);
            });
            running.done.await.context("server task failed")??;
            println!("stopped");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let c = read_config(&config)?;
            let channels: usize = c.tenants.iter().map(|t| t.channels.len()).sum();
            println!(
                "{}: ok ({} tenant(s), {channels} channel(s))",
                config.display(),
                c.tenants.len()
            );
            for app in &c.meta_apps {
                let numbers = c
                    .tenants
                    .iter()
                    .flat_map(|t| &t.channels)
                    .filter(|ch| ch.meta_app.as_ref() == Some(&app.id))
                    .count();
                println!(
                    "  Meta app {}: callback URL <base>/webhooks/meta/{} for its {numbers} number(s)",
                    app.id, app.id
                );
            }
            for w in &c.warnings {
                println!("  warning: {w}");
            }
            Ok(())
        }
        Command::Audit {
            target,
            privacy,
            tenant,
            limit,
            json,
        } => {
            let tenant = tenant
                .map(|t| relay_core::ids::TenantId::parse(&t))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let backends = privacy_for(&target, &privacy, &clock).await?;
            let entries = backends
                .audit()?
                .list(tenant.as_ref(), limit, clock.now())
                .await?;
            if entries.is_empty() && !json {
                println!("no audit entries");
            }
            for e in entries {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        format_ms(e.at_ms, &clock),
                        e.tenant,
                        e.actor,
                        e.action,
                        e.target.as_deref().unwrap_or("-"),
                        e.result
                    );
                }
            }
            Ok(())
        }
        Command::Tenants { command } => command.run(clock).await,
        Command::Staff { command } => command.run(clock).await,
        Command::Templates { command } => command.run(clock).await,
        Command::Usage(args) => args.run(clock).await,
        Command::Backup(args) => args.run(clock),
        Command::Restore(args) => args.run(clock).await,
        Command::Quarantine { command } => command.run(clock).await,
        Command::Contacts { command } => command.run(clock).await,
        Command::Dlq { command } => command.run(clock).await,
    }
}

async fn aws_clients_no_table(args: &AwsArgs) -> (relay_aws::Clients, Option<String>) {
    let sdk = relay_aws::sdk_config(args.endpoint_url.as_deref()).await;
    (relay_aws::Clients::new(&sdk), args.table.clone())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
