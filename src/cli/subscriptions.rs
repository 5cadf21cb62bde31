//! `portcullis subscriptions`: the gateway's subscriptions and their keys, in the token
//! issuer's store (README: Subscriptions). Opens the store as `systems` does (`--config`'s
//! `identity.store`, or `--store`); every change is audited with its actor (`--actor`, or the
//! OS user). Keys are printed once, by `create` and `regenerate`, and nowhere else; `import`
//! keeps the keys callers already hold.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::identity::{time, used, StoreArgs};
use crate::store::{
    block_on, Imported, KeyInfo, KeySlot, Owner, Store, Subscription, SubscriptionScope, SubscriptionState,
    WEAK_KEY_BITS,
};
use crate::tools::apim_subscriptions;

#[derive(Subcommand)]
pub(super) enum SubscriptionsCommand {
    /// Create an active subscription; prints its id and both keys, once.
    Create {
        /// Its display name.
        #[arg(long)]
        name: String,
        /// What its keys open: `all`, `product:NAME` or `route:NAME`.
        #[arg(long)]
        scope: String,
        /// The external system it belongs to, by id.
        #[arg(long, conflicts_with = "owner_user")]
        owner_system: Option<String>,
        /// The user it belongs to, by id.
        #[arg(long)]
        owner_user: Option<String>,
        /// When its keys stop working: an RFC 3339 time (`2027-01-31T00:00:00Z`) or a
        /// duration from now (`90d`, `12h`, `30m`).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Every subscription, with its state now (never a key).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One subscription and its keys' dates and strength (never a key).
    Show {
        id: String,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Refuse its keys until `activate`.
    Suspend { id: String },
    /// Accept its keys again (a suspended or expired subscription; never a cancelled one).
    Activate { id: String },
    /// Refuse its keys for good: cancelled is final, as in APIM.
    Cancel { id: String },
    /// Replace one key with a new one, printed once; the other keeps working.
    Regenerate {
        id: String,
        #[arg(long, conflicts_with = "secondary", required_unless_present = "secondary")]
        primary: bool,
        #[arg(long)]
        secondary: bool,
    },
    /// Set when its keys stop working (`--at`), or remove the expiry (`--never`).
    Expire {
        id: String,
        /// An RFC 3339 time or a duration from now (`90d`, `12h`, `30m`).
        #[arg(long, conflicts_with = "never", required_unless_present = "never")]
        at: Option<String>,
        #[arg(long)]
        never: bool,
    },
    /// Delete a subscription and its keys.
    Delete { id: String },
    /// Import subscriptions with their keys from APIM's management API answers (a JSON
    /// file; README: Subscriptions). A subscription already here is updated in place.
    Import { file: PathBuf },
}

/// The command runs on a runtime of its own: the CLI is where blocking meets the store.
pub(super) fn subscriptions(args: &StoreArgs, command: SubscriptionsCommand) -> anyhow::Result<ExitCode> {
    block_on(manage(args, command))
}

/// `--expires` / `--at`: an RFC 3339 time, or a duration from `now` (`90d`, `12h`, `30m`,
/// `45s`).
fn when(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Some(at) = apim_subscriptions::parse_time(text) {
        return Ok(at);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => 0,
    };
    match digits.parse::<i64>() {
        Ok(n) if unit > 0 => Ok(now.saturating_add(n.saturating_mul(unit))),
        _ => anyhow::bail!(
            "{text:?} is not a time: write an RFC 3339 time like 2027-01-31T00:00:00Z, or a duration like 90d, 12h or 30m"
        ),
    }
}

fn expiry(at: Option<i64>) -> String {
    at.map_or_else(|| "never".to_owned(), time)
}

fn owner(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A key's strength as shown: `256 bits`, with a warning below [`WEAK_KEY_BITS`].
fn strength(key: &KeyInfo) -> String {
    if key.is_weak() {
        format!("~{} bits (WEAK: below {WEAK_KEY_BITS}; regenerate it once callers can take a new key)", key.bits)
    } else {
        format!("~{} bits", key.bits)
    }
}

/// The warnings of a subscription's weak keys, one a line.
fn weak_keys(s: &Subscription) -> Vec<String> {
    [KeySlot::Primary, KeySlot::Secondary]
        .into_iter()
        .filter(|slot| s.key(*slot).is_weak())
        .map(|slot| {
            format!(
                "warning: subscription {}: the {slot} key is about {} bits, below {WEAK_KEY_BITS}; \
                 regenerate it (subscriptions regenerate {} --{slot}) once its callers can take a new key",
                s.id,
                s.key(slot).bits,
                s.id
            )
        })
        .collect()
}

/// A subscription as `--json` prints it (never a key): times in RFC 3339, `state` the state
/// now, `stored_state` as stored.
fn as_json(s: &Subscription, now: i64) -> serde_json::Value {
    let key = |k: &KeyInfo| {
        serde_json::json!({
            "created": time(k.created_at),
            "last_used": k.used_at.map(time),
            "bits": k.bits,
            "weak": k.is_weak(),
        })
    };
    serde_json::json!({
        "id": s.id,
        "name": s.name,
        "scope": s.scope.to_string(),
        "state": s.state_at(now).as_str(),
        "stored_state": s.state.as_str(),
        "expires": s.expires_at.map(time),
        "owner": s.owner.as_ref().map(ToString::to_string),
        "created": time(s.created_at),
        "primary": key(&s.primary),
        "secondary": key(&s.secondary),
    })
}

/// The subscription, or an error saying how to find one.
async fn found(store: &Store, id: &str) -> anyhow::Result<Subscription> {
    store
        .subscription(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("subscription {id:?} not found; `portcullis subscriptions list` shows them"))
}

async fn manage(args: &StoreArgs, command: SubscriptionsCommand) -> anyhow::Result<ExitCode> {
    let store = args.open().await?;
    let actor = args.actor();
    let now = crate::clock::unix_now() as i64;
    match command {
        SubscriptionsCommand::Create { name, scope, owner_system, owner_user, expires } => {
            let scope = SubscriptionScope::parse(&scope).ok_or_else(|| {
                anyhow::anyhow!("--scope {scope:?} is not a subscription scope; write all, product:NAME or route:NAME")
            })?;
            let owner = owner_system.map(Owner::System).or(owner_user.map(Owner::User));
            let expires_at = expires.as_deref().map(|t| when(t, now)).transpose().context("--expires")?;
            let created = store.create_subscription(&name, scope, owner, expires_at, &actor).await?;
            let s = &created.subscription;
            println!("created subscription {name}");
            println!("  id:            {}", s.id);
            println!("  scope:         {}", s.scope);
            println!("  owner:         {}", self::owner(s.owner.as_ref()));
            println!("  expires:       {}", expiry(s.expires_at));
            println!("  primary key:   {}", created.primary.text);
            println!("  secondary key: {}", created.secondary.text);
            println!(
                "Both keys are shown only this once: hand them to the subscriber now. Callers send one as \
                 Ocp-Apim-Subscription-Key (or ?subscription-key=)."
            );
        }
        SubscriptionsCommand::List { json: true } => {
            let all: Vec<_> = store.subscriptions().await?.iter().map(|s| as_json(s, now)).collect();
            println!("{}", serde_json::Value::Array(all));
        }
        SubscriptionsCommand::Show { id, json: true } => {
            println!("{}", as_json(&found(&store, &id).await?, now));
        }
        SubscriptionsCommand::List { json: false } => {
            println!(
                "{:<36}  {:<24}  {:<24}  {:<9}  {:<25}  {:<25}  {:<25}  KEYS",
                "ID", "NAME", "SCOPE", "STATE", "EXPIRES", "PRIMARY LAST USED", "SECONDARY LAST USED"
            );
            let all = store.subscriptions().await?;
            for s in &all {
                let weak = s.primary.is_weak() || s.secondary.is_weak();
                println!(
                    "{:<36}  {:<24}  {:<24}  {:<9}  {:<25}  {:<25}  {:<25}  {}",
                    s.id,
                    s.name,
                    s.scope.to_string(),
                    s.state_at(now).as_str(),
                    expiry(s.expires_at),
                    used(s.primary.used_at),
                    used(s.secondary.used_at),
                    if weak { "WEAK" } else { "ok" }
                );
            }
            for s in &all {
                for warning in weak_keys(s) {
                    eprintln!("{warning}");
                }
            }
        }
        SubscriptionsCommand::Show { id, json: false } => {
            let s = found(&store, &id).await?;
            println!("id:              {}", s.id);
            println!("name:            {}", s.name);
            println!("scope:           {}", s.scope);
            let state = s.state_at(now);
            if state == s.state {
                println!("state:           {state}");
            } else {
                println!("state:           {state} (stored as {}; the expiry passed)", s.state);
            }
            println!("expires:         {}", expiry(s.expires_at));
            println!("owner:           {}", owner(s.owner.as_ref()));
            println!("created:         {}", time(s.created_at));
            for (slot, key) in [(KeySlot::Primary, &s.primary), (KeySlot::Secondary, &s.secondary)] {
                println!("{:<16} {}", format!("{slot} key:"), strength(key));
                println!("  created:       {}", time(key.created_at));
                println!("  last used:     {}", used(key.used_at));
            }
        }
        SubscriptionsCommand::Suspend { id } => {
            store.suspend_subscription(&id, &actor).await?;
            println!("subscription {id} suspended: its keys are refused until `subscriptions activate {id}`");
        }
        SubscriptionsCommand::Activate { id } => {
            let s = store.activate_subscription(&id, &actor).await?;
            if s.state_at(now) == SubscriptionState::Expired {
                println!(
                    "subscription {id} activated, but its expiry ({}) has passed: its keys are still refused; \
                     move it with `subscriptions expire {id} --at …` or `--never`",
                    expiry(s.expires_at)
                );
            } else {
                println!("subscription {id} activated");
            }
        }
        SubscriptionsCommand::Cancel { id } => {
            store.cancel_subscription(&id, &actor).await?;
            println!(
                "subscription {id} cancelled: its keys are refused for good (create a new one to subscribe again)"
            );
        }
        SubscriptionsCommand::Regenerate { id, primary, secondary } => {
            let slot = match (primary, secondary) {
                (true, _) => KeySlot::Primary,
                (false, true) => KeySlot::Secondary,
                (false, false) => anyhow::bail!("name the key: --primary or --secondary"),
            };
            let other = if slot == KeySlot::Primary { KeySlot::Secondary } else { KeySlot::Primary };
            let key = store.regenerate_subscription_key(&id, slot, &actor).await?;
            println!("regenerated the {slot} key of subscription {id}: the old {slot} key is refused now");
            println!("  new {slot} key: {}", key.text);
            println!("It is shown only this once. The {other} key keeps working: callers switch to the new key first.");
        }
        SubscriptionsCommand::Expire { id, at, never } => {
            let expires_at = match (at, never) {
                (Some(text), _) => Some(when(&text, now).context("--at")?),
                (None, true) => None,
                (None, false) => anyhow::bail!("give --at TIME or --never"),
            };
            let s = store.set_subscription_expiry(&id, expires_at, &actor).await?;
            println!("subscription {id}: expires {}", expiry(s.expires_at));
            if s.state == SubscriptionState::Expired {
                println!("It is still stored as expired: `subscriptions activate {id}` accepts its keys again.");
            }
        }
        SubscriptionsCommand::Delete { id } => {
            store.delete_subscription(&id, &actor).await?;
            println!("subscription {id} deleted with its keys");
        }
        SubscriptionsCommand::Import { file } => return import(&store, &file, &actor).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Imports every subscription of the file, each in its own transaction; prints what was
/// imported, updated and refused (never a key); exit 1 when any was refused.
async fn import(store: &Store, file: &std::path::Path, actor: &str) -> anyhow::Result<ExitCode> {
    let json = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let read = apim_subscriptions::read(&json).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let (mut created, mut updated, mut refused) = (0, 0, 0);
    let mut warnings = Vec::new();
    for entry in read {
        let imported = match entry {
            Ok(import) => {
                store.import_subscription(&import, actor).await.map_err(|e| (import.id.clone(), e.to_string()))
            }
            Err(r) => Err((r.id, r.reason)),
        };
        match imported {
            Ok(done) => {
                let s = done.subscription();
                let verb = match done {
                    Imported::Created(_) => {
                        created += 1;
                        "imported"
                    }
                    Imported::Updated(_) => {
                        updated += 1;
                        "updated "
                    }
                };
                println!("{verb} {}  {}  {}  {}", s.id, s.scope, s.state, s.name);
                warnings.extend(weak_keys(s));
            }
            Err((id, reason)) => {
                refused += 1;
                println!("refused  {id}: {reason}");
            }
        }
    }
    for warning in &warnings {
        eprintln!("{warning}");
    }
    println!("{created} imported, {updated} updated, {refused} refused");
    Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
