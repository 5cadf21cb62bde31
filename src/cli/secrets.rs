//! `portcullis secrets`: the encrypted secret store behind `${secret:NAME}`. Values come in
//! on standard input, never as arguments (which `ps` and shell histories show), and never
//! come out: `list` shows names and dates only. Every change is in the audit log, without
//! the value.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::secrets::{verify_key, MasterKey, SecretsError};
use crate::store::{block_on, Store, StoreError};

#[derive(Subcommand)]
pub(super) enum SecretsCommand {
    /// Print a fresh random master key (base64), for `secrets.master_key`.
    GenKey,
    /// Set a secret (new or replaced) from standard input: `portcullis secrets set NAME < file`.
    Set { name: String },
    /// Every secret's name and when it was created, changed and last used (never a value).
    List,
    /// Remove a secret.
    Rm { name: String },
    /// Re-seal every secret under a new master key, in one transaction; then configure it.
    RotateKey {
        /// A file holding the new key (from `gen-key`).
        #[arg(long, conflicts_with = "new_key_env", required_unless_present = "new_key_env")]
        new_key_file: Option<PathBuf>,
        /// An environment variable holding the new key.
        #[arg(long)]
        new_key_env: Option<String>,
    },
    /// Delete every secret and the key check: for a store copied from another environment,
    /// whose master key is not here. Set each secret again afterwards.
    Reset {
        /// Confirms that every secret is to be deleted.
        #[arg(long)]
        yes: bool,
    },
}

/// The command runs on a runtime of its own: the CLI is where blocking meets the store.
pub(super) fn secrets(config: &Path, actor: &str, command: SecretsCommand) -> anyhow::Result<ExitCode> {
    block_on(manage_secrets(config, actor, command))
}

async fn manage_secrets(config: &Path, actor: &str, command: SecretsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretsCommand::GenKey => println!("{}", MasterKey::generate()),
        SecretsCommand::Set { name } => {
            let (store, key) = open(config).await?;
            let value = read_value()?;
            let sealed = key.seal(&name, value.as_bytes());
            store.put_secret(&name, &sealed, key.check(), actor).await.map_err(wrong_key)?;
            println!("secret {name} set ({} bytes); configurations reference it as ${{secret:{name}}}", value.len());
        }
        SecretsCommand::List => list(&open(config).await?.0).await?,
        SecretsCommand::Rm { name } => {
            open(config).await?.0.remove_secret(&name, actor).await?;
            println!("secret {name} removed");
        }
        SecretsCommand::RotateKey { new_key_file, new_key_env } => {
            let (store, key) = open(config).await?;
            let new_text = match (new_key_file, new_key_env) {
                (Some(file), _) => std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?,
                (None, Some(var)) => std::env::var(&var).map_err(|_| anyhow::anyhow!("{var} is not set"))?,
                (None, None) => anyhow::bail!("give --new-key-file or --new-key-env"),
            };
            let next = MasterKey::parse(&new_text)?;
            let reseal = |name: &str, sealed: &[u8]| {
                let value = key.open(name, sealed).map_err(|e| StoreError::Reseal(e.into()))?;
                Ok(next.seal(name, &value))
            };
            let count = store.reseal_secrets(&reseal, next.check(), actor).await?;
            println!("re-sealed {count} secret(s) under the new key; configure it as secrets.master_key now");
        }
        SecretsCommand::Reset { yes } => {
            let (location, _) = crate::compile::secret_store(config).map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(yes, "this deletes every secret of {location:?}: add --yes to confirm");
            let deleted = location.open().await?.reset_secrets(actor).await?;
            println!(
                "deleted {deleted} secret(s) and the key check; set each secret again under this environment's key"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration's secret store, and its master key, checked against the store.
async fn open(config: &Path) -> anyhow::Result<(Store, MasterKey)> {
    let (location, key_text) = crate::compile::secret_store(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = location.open().await?;
    let key = MasterKey::parse(&key_text)?;
    verify_key(&store, &key).await?;
    Ok((store, key))
}

/// The value on standard input, without one trailing line end.
fn read_value() -> anyhow::Result<String> {
    let mut value = String::new();
    std::io::stdin().read_to_string(&mut value).map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
    let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value).to_owned();
    anyhow::ensure!(!value.is_empty(), "no value on standard input: `portcullis secrets set NAME < file`");
    Ok(value)
}

/// A store sealed under another key meanwhile refuses `set`.
fn wrong_key(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::WrongMasterKey => SecretsError::WrongKey.into(),
        other => other.into(),
    }
}

async fn list(store: &Store) -> anyhow::Result<()> {
    println!("{:<32}  {:<25}  {:<25}  LAST USED", "NAME", "CREATED", "UPDATED");
    for s in store.secrets().await? {
        let used = s.used_at.map_or_else(|| "never".to_owned(), super::identity::time);
        println!(
            "{:<32}  {:<25}  {:<25}  {used}",
            s.name,
            super::identity::time(s.created_at),
            super::identity::time(s.updated_at)
        );
    }
    Ok(())
}
