//! `portcullis systems`, `users` and `audit`: manage the token issuer's store (README: Token issuer).
//! Secrets are printed once, by `systems create` and `systems renew-secret`, and nowhere
//! else; every change is audited with its actor (`--actor`, or the OS user). Scopes are
//! granted per system (`systems create --scopes`, `systems scopes --set`), and only scopes
//! the configuration's `identity.scopes` offers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::store::{block_on, LinkRef, Store, StoreLocation};

/// Where the store is and who is acting.
#[derive(Args)]
pub(super) struct StoreArgs {
    /// The configuration whose `identity.store` to use, and whose `identity.scopes` bound the
    /// scopes a system may be granted.
    #[arg(long, global = true, default_value = "policies/gateway.yaml")]
    config: PathBuf,
    /// The store itself (`sqlite:PATH` or `postgres://USER@HOST/DATABASE`), instead of reading
    /// it from --config.
    #[arg(long, global = true)]
    store: Option<String>,
    /// Who is acting, for the audit log (default: the OS user).
    #[arg(long, global = true)]
    actor: Option<String>,
}

impl StoreArgs {
    pub(super) async fn open(&self) -> anyhow::Result<Store> {
        let location = match &self.store {
            Some(text) => StoreLocation::parse(text, std::path::Path::new(""))?,
            None => crate::compile::identity_store(&self.config).map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        Ok(location.open().await?)
    }

    pub(super) fn actor(&self) -> String {
        actor(self.actor.clone())
    }
}

/// Who is acting, for the audit log: `--actor`, else the login name, else the OS user.
pub(super) fn actor(given: Option<String>) -> String {
    given
        .or_else(|| ["USER", "LOGNAME", "USERNAME"].iter().find_map(|v| std::env::var(v).ok()))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(os_user)
}

/// The name of the user running this process, from its uid (environments without `USER`,
/// like containers and cron, still get a meaningful actor).
fn os_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".to_owned();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|fields| fields.first().map(|name| (*name).to_owned()))
        .unwrap_or_else(|| format!("uid:{uid}"))
}

#[derive(Subcommand)]
pub(super) enum SystemsCommand {
    /// Create an external system; prints its id and both secrets, once.
    Create {
        name: String,
        /// Comma-separated scopes it may ask for, each in the configuration's `identity.scopes`
        /// (default: none; tokens without `scope` need none).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Show the scopes a system may ask for, or replace them with --set (audited).
    Scopes {
        id: String,
        /// The new comma-separated list, each in the configuration's `identity.scopes`;
        /// `--set ""` grants none.
        #[arg(long, value_delimiter = ',')]
        set: Option<Vec<String>>,
    },
    /// Every system (never secrets).
    List,
    /// One system and its user links (never secrets).
    Show {
        id: String,
    },
    /// Refuse tokens to this system.
    Deactivate {
        id: String,
    },
    Activate {
        id: String,
    },
    /// Void the primary secret, promote the alternate, print a new alternate once.
    RenewSecret {
        id: String,
    },
    /// Map the system's external user id to an internal user.
    Link {
        id: String,
        #[arg(long)]
        external_user: String,
        #[arg(long)]
        user: String,
    },
    /// Remove a link, by external user id or by internal user.
    Unlink {
        id: String,
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        external_user: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
pub(super) enum UsersCommand {
    /// Add an internal user.
    Add {
        id: String,
        /// Comma-separated roles, put in the tokens' `roles` claim.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Refuse tokens for this user, through every system.
    Deactivate {
        id: String,
    },
    Activate {
        id: String,
    },
    List,
}

pub(super) fn time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// A time, or `never`.
pub(super) fn used(at: Option<i64>) -> String {
    at.map_or_else(|| "never".to_owned(), time)
}

/// Scopes as listed: `read,write`, or `-` for none.
fn scope_list(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "-".to_owned()
    } else {
        scopes.join(",")
    }
}

/// Scopes as `show` and `scopes` print them, marking those the configuration (when it can be
/// read) no longer offers: the token endpoint refuses them.
fn scopes_described(scopes: &[String], configured: Option<&[String]>) -> String {
    if scopes.is_empty() {
        return "none".to_owned();
    }
    let describe = |s: &String| match configured {
        Some(c) if !c.contains(s) => format!("{s} (not in identity.scopes: refused)"),
        _ => s.clone(),
    };
    scopes.iter().map(describe).collect::<Vec<_>>().join(", ")
}

impl StoreArgs {
    /// The scopes to grant, each checked against the configuration's `identity.scopes`
    /// (granting none needs no configuration).
    fn grantable(&self, scopes: Vec<String>) -> anyhow::Result<Vec<String>> {
        let scopes: Vec<String> = scopes.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        if scopes.is_empty() {
            return Ok(scopes);
        }
        let configured = crate::compile::identity_scopes(&self.config)
            .map_err(|e| anyhow::anyhow!("granting scopes needs the configuration's identity.scopes: {e}"))?;
        let unknown: Vec<&str> = scopes.iter().filter(|s| !configured.contains(s)).map(String::as_str).collect();
        if !unknown.is_empty() {
            anyhow::bail!(
                "cannot grant {}: not in identity.scopes of {} (configured: {}); add it there first",
                unknown.join(", "),
                self.config.display(),
                if configured.is_empty() { "none".to_owned() } else { configured.join(", ") }
            );
        }
        Ok(scopes)
    }

    /// The configuration's `identity.scopes`, if it can be read.
    fn configured_scopes(&self) -> Option<Vec<String>> {
        crate::compile::identity_scopes(&self.config).ok()
    }
}

fn active(flag: bool) -> &'static str {
    if flag {
        "active"
    } else {
        "inactive"
    }
}

/// The command runs on a runtime of its own: the CLI is where blocking meets the store.
pub(super) fn systems(args: &StoreArgs, command: SystemsCommand) -> anyhow::Result<ExitCode> {
    block_on(manage_systems(args, command))
}

pub(super) fn users(args: &StoreArgs, command: UsersCommand) -> anyhow::Result<ExitCode> {
    block_on(manage_users(args, command))
}

pub(super) fn audit(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    block_on(show_audit(args))
}

async fn manage_systems(args: &StoreArgs, command: SystemsCommand) -> anyhow::Result<ExitCode> {
    let store = args.open().await?;
    let actor = args.actor();
    match command {
        SystemsCommand::Create { name, scopes } => {
            let scopes = args.grantable(scopes)?;
            let (primary, alternate) = (store.hasher().generate(), store.hasher().generate());
            let system = store.create_system(&name, &primary.hash, &alternate.hash, &scopes, &actor).await?;
            println!("created system {name}");
            println!("  client id:        {}", system.id);
            println!("  scopes:           {}", scopes_described(&system.scopes, None));
            println!("  primary secret:   {}", primary.text);
            println!("  alternate secret: {}", alternate.text);
            println!("Both secrets are shown only this once: put them in the calling system's secret store now.");
        }
        SystemsCommand::List => {
            println!(
                "{:<36}  {:<24}  {:<8}  {:<25}  {:<25}  {:<25}  SCOPES",
                "CLIENT ID", "NAME", "STATE", "CREATED", "PRIMARY LAST USED", "ALTERNATE LAST USED"
            );
            for s in store.systems().await? {
                println!(
                    "{:<36}  {:<24}  {:<8}  {:<25}  {:<25}  {:<25}  {}",
                    s.id,
                    s.name,
                    active(s.active),
                    time(s.created_at),
                    used(s.primary_used_at),
                    used(s.alternate_used_at),
                    scope_list(&s.scopes)
                );
            }
        }
        SystemsCommand::Scopes { id, set: None } => {
            let system = store.system(&id).await?.ok_or_else(|| anyhow::anyhow!("system {id:?} not found"))?;
            println!("scopes:           {}", scopes_described(&system.scopes, args.configured_scopes().as_deref()));
        }
        SystemsCommand::Scopes { id, set: Some(scopes) } => {
            let scopes = args.grantable(scopes)?;
            let old = store.set_system_scopes(&id, &scopes, &actor).await?;
            println!(
                "system {id}: scopes [{}] (were [{}]); tokens already issued keep theirs until they expire",
                scopes.join(", "),
                old.join(", ")
            );
        }
        SystemsCommand::Show { id } => {
            let system = store.system(&id).await?.ok_or_else(|| anyhow::anyhow!("system {id:?} not found"))?;
            println!("client id:        {}", system.id);
            println!("name:             {}", system.name);
            println!("state:            {}", active(system.active));
            println!("scopes:           {}", scopes_described(&system.scopes, args.configured_scopes().as_deref()));
            println!("created:          {}", time(system.created_at));
            println!("secrets renewed:  {}", used(system.secrets_renewed_at));
            println!("primary used:     {}", used(system.primary_used_at));
            println!("alternate used:   {}", used(system.alternate_used_at));
            let links = store.links(&id).await?;
            println!("links:            {}", links.len());
            for link in links {
                println!("  {} -> {} (since {})", link.external_user, link.user_id, time(link.created_at));
            }
        }
        SystemsCommand::Deactivate { id } => {
            store.set_system_active(&id, false, &actor).await?;
            println!("system {id} deactivated: it gets no new tokens (issued ones run until they expire)");
        }
        SystemsCommand::Activate { id } => {
            store.set_system_active(&id, true, &actor).await?;
            println!("system {id} activated");
        }
        SystemsCommand::RenewSecret { id } => {
            let alternate = store.hasher().generate();
            store.renew_secret(&id, &alternate.hash, &actor).await?;
            println!("renewed the secrets of system {id}: the old primary is void, the alternate is now primary");
            println!("  new alternate secret: {}", alternate.text);
            println!("It is shown only this once. Renew again once callers use it to replace the other secret too.");
        }
        SystemsCommand::Link { id, external_user, user } => {
            store.link(&id, &external_user, &user, &actor).await?;
            println!("system {id}: external user {external_user} -> user {user}");
        }
        SystemsCommand::Unlink { id, external_user, user } => {
            let which = match (&external_user, &user) {
                (Some(ext), _) => LinkRef::ExternalUser(ext),
                (None, Some(user)) => LinkRef::User(user),
                (None, None) => anyhow::bail!("name the link with --external-user or --user"),
            };
            let link = store.unlink(&id, which, &actor).await?;
            println!("system {id}: unlinked external user {} from user {}", link.external_user, link.user_id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn manage_users(args: &StoreArgs, command: UsersCommand) -> anyhow::Result<ExitCode> {
    let store = args.open().await?;
    let actor = args.actor();
    match command {
        UsersCommand::Add { id, roles } => {
            let roles: Vec<String> = roles.into_iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
            store.add_user(&id, &roles, &actor).await?;
            println!("added user {id} with roles [{}]", roles.join(", "));
        }
        UsersCommand::Deactivate { id } => {
            store.set_user_active(&id, false, &actor).await?;
            println!("user {id} deactivated");
        }
        UsersCommand::Activate { id } => {
            store.set_user_active(&id, true, &actor).await?;
            println!("user {id} activated");
        }
        UsersCommand::List => {
            println!("{:<32}  {:<8}  ROLES", "USER", "STATE");
            for u in store.users().await? {
                println!("{:<32}  {:<8}  {}", u.id, active(u.active), u.roles.join(","));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_audit(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = args.open().await?;
    println!("{:<25}  {:<16}  {:<20}  {:<36}  {:<16}  DETAIL", "TIME", "ACTOR", "ACTION", "SYSTEM", "USER");
    for e in store.audit().await? {
        println!(
            "{:<25}  {:<16}  {:<20}  {:<36}  {:<16}  {}",
            time(e.at),
            e.actor,
            e.action,
            e.system_id.as_deref().unwrap_or("-"),
            e.user_id.as_deref().unwrap_or("-"),
            e.detail.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
