//! `relay staff`: the web inbox's personal accounts, locally (the data directory) or on AWS
//! (the deployment's table). Passwords come from standard input or are generated; they are
//! never arguments (which other users of the machine can read in the process list).

use crate::{Target, load_serve_config};
use anyhow::{Context, bail};
use clap::Subcommand;
use relay_core::Clock;
use relay_core::ids::TenantId;
use relay_core::ports::{AuditLog, Directory};
use relay_core::records::AuditEntry;
use relay_core::staff::{self, Role, StaffAccount, StaffStore};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Add a staff account. The password is read from standard input (--password-stdin),
    /// else one is generated and printed once.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// "admin" may also export and erase contacts.
        #[arg(long, default_value = "staff")]
        role: String,
        /// Read the password (at least 12 characters) from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        at: StaffTarget,
    },
    /// List a tenant's staff accounts (never their passwords).
    List {
        #[arg(long)]
        tenant: String,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: StaffTarget,
    },
    /// Remove a staff account; its sessions end at once.
    Remove {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        #[command(flatten)]
        at: StaffTarget,
    },
    /// Set a new password (standard input, or generated); every session of the account ends.
    ResetPassword {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        at: StaffTarget,
    },
}

#[derive(clap::Args, Clone)]
pub struct StaffTarget {
    #[command(flatten)]
    target: Target,
    /// The relay.toml whose tenants are checked (locally). Default: ./relay.toml if it
    /// exists, else the built-in demo.
    #[arg(long, short, conflicts_with = "aws")]
    config: Option<PathBuf>,
    /// The audit log table (with --aws; the entries say which operator command ran).
    #[arg(long, env = "AUDIT_TABLE")]
    audit_table: Option<String>,
}

struct Opened {
    staff: Arc<dyn StaffStore>,
    audit: Option<Arc<dyn AuditLog>>,
    audit_retention_secs: i64,
}

async fn open(at: &StaffTarget, tenant: &TenantId, clock: &Clock) -> anyhow::Result<Opened> {
    if at.target.aws {
        let (clients, table) = crate::aws_clients(&at.target.aws_args).await?;
        let directory = clients.directory(&table);
        if directory.tenant(tenant).await?.is_none() {
            bail!("tenant {tenant} is not in the table {table} (relay tenants apply first)");
        }
        Ok(Opened {
            staff: Arc::new(clients.staff_store(&table)),
            audit: at
                .audit_table
                .as_deref()
                .map(|t| Arc::new(clients.audit_log(t)) as _),
            audit_retention_secs: i64::from(relay_core::config::DEFAULT_AUDIT_RETENTION_DAYS)
                * 86_400,
        })
    } else {
        let (config, source) = load_serve_config(at.config.as_deref())?;
        if !config.tenants.iter().any(|t| &t.tenant.id == tenant) {
            let known: Vec<&str> = config
                .tenants
                .iter()
                .map(|t| t.tenant.id.as_str())
                .collect();
            bail!(
                "tenant {tenant} is not in {source} (its tenants: {})",
                known.join(", ")
            );
        }
        let local = relay_embedded::Local::open(&at.target.data_dir, clock.clone())?;
        Ok(Opened {
            staff: local.staff.clone(),
            audit: Some(local.audit.clone()),
            audit_retention_secs: i64::from(config.audit_retention_days()) * 86_400,
        })
    }
}

impl Opened {
    async fn audit(&self, clock: &Clock, tenant: &TenantId, action: &str, staff_id: &str) {
        let Some(audit) = &self.audit else { return };
        let entry = AuditEntry {
            at_ms: clock.now_ms(),
            tenant: tenant.clone(),
            actor: "cli".into(),
            action: action.into(),
            target: Some(staff_id.to_owned()),
            result: 200,
            expires_at: clock.now() + self.audit_retention_secs,
        };
        if let Err(e) = audit.append(&entry).await {
            eprintln!("warning: the audit entry could not be written: {e}");
        }
    }

    async fn by_email(&self, tenant: &TenantId, email: &str) -> anyhow::Result<StaffAccount> {
        let email = staff::normalize_email(email);
        match self.staff.staff_by_email(&email).await? {
            Some(a) if &a.tenant == tenant => Ok(a),
            _ => bail!("tenant {tenant} has no staff account with that email"),
        }
    }
}

/// The password from standard input (one line; the newline is not part of it), or a new
/// random one and whether it was generated.
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .take(staff::MAX_PASSWORD_BYTES as u64 + 2)
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        let s = s.strip_suffix('\n').unwrap_or(&s);
        let s = s.strip_suffix('\r').unwrap_or(s).to_owned();
        Ok((s, false))
    } else {
        let generated = staff::generate_password();
        Ok((generated, true))
    }
}

fn parse_tenant(t: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(t).map_err(|e| anyhow::anyhow!("--tenant: {e}"))
}

impl StaffCommand {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        match self {
            StaffCommand::Add {
                tenant,
                email,
                role,
                password_stdin,
                at,
            } => {
                let tenant = parse_tenant(&tenant)?;
                let role = Role::parse(&role).with_context(|| {
                    format!("--role: {role:?} is neither \"admin\" nor \"staff\"")
                })?;
                if !staff::valid_email(&email) {
                    bail!("--email: not an email address");
                }
                let (password, generated) = password(password_stdin)?;
                let hash = staff::hash_password(&password).context("the password")?;
                let opened = open(&at, &tenant, &clock).await?;
                let account = StaffAccount {
                    id: staff::new_staff_id(),
                    tenant: tenant.clone(),
                    email: staff::normalize_email(&email),
                    role,
                    password_hash: hash,
                    created_at: clock.now(),
                    sessions_valid_after: 0,
                };
                if !opened.staff.add_staff(&account).await? {
                    bail!(
                        "an account with that email exists already (emails are unique across tenants)"
                    );
                }
                opened
                    .audit(&clock, &tenant, "staff.add", &account.id)
                    .await;
                println!(
                    "added {} ({}) to {tenant}: {}",
                    account.email,
                    role.as_str(),
                    account.id
                );
                if generated {
                    println!("password (shown once): {password}");
                }
                Ok(())
            }
            StaffCommand::List { tenant, json, at } => {
                let tenant = parse_tenant(&tenant)?;
                let opened = open(&at, &tenant, &clock).await?;
                let accounts = opened.staff.list_staff(&tenant).await?;
                if accounts.is_empty() && !json {
                    println!("tenant {tenant} has no staff accounts (relay staff add)");
                }
                for a in accounts {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"id": a.id, "email": a.email, "role": a.role, "created_at": a.created_at})
                        );
                    } else {
                        println!("{}\t{}\t{}", a.id, a.role.as_str(), a.email);
                    }
                }
                Ok(())
            }
            StaffCommand::Remove { tenant, email, at } => {
                let tenant = parse_tenant(&tenant)?;
                let opened = open(&at, &tenant, &clock).await?;
                let account = opened.by_email(&tenant, &email).await?;
                opened.staff.remove_staff(&tenant, &account.id).await?;
                opened
                    .audit(&clock, &tenant, "staff.remove", &account.id)
                    .await;
                println!("removed {} from {tenant}", account.id);
                Ok(())
            }
            StaffCommand::ResetPassword {
                tenant,
                email,
                password_stdin,
                at,
            } => {
                let tenant = parse_tenant(&tenant)?;
                let (password, generated) = password(password_stdin)?;
                let hash = staff::hash_password(&password).context("the password")?;
                let opened = open(&at, &tenant, &clock).await?;
                let account = opened.by_email(&tenant, &email).await?;
                opened
                    .staff
                    .set_password(&tenant, &account.id, &hash, clock.now())
                    .await?;
                opened
                    .audit(&clock, &tenant, "staff.reset-password", &account.id)
                    .await;
                println!(
                    "new password set for {}; its sessions have ended",
                    account.id
                );
                if generated {
                    println!("password (shown once): {password}");
                }
                Ok(())
            }
        }
    }
}
