//! The command line (README: Commands): one file per command.

mod bench;
mod certs;
mod check;
mod demo;
mod identity;
mod import_apim;
mod probe;
mod run;
mod secrets;
mod subscriptions;
mod test;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "portcullis", version, about = "TLS-terminating reverse-proxy security gateway")]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `portcullis=debug` (RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// `json` (one object per line) or `pretty` (for people).
    #[arg(long, global = true, default_value = "json")]
    log_format: LogFormat,
    /// Where access-log lines go: `stdout`, `off`, or a file path (appended).
    #[arg(long, global = true, default_value = "stdout")]
    access_log: String,
    /// Event-loop threads of `run`, `demo` and `bench` (default: one per CPU the process may
    /// use). `1` runs a single event loop without work stealing, like HAProxy's `nbthread 1`.
    #[arg(long, global = true)]
    workers: Option<std::num::NonZeroUsize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

/// Process-wide settings from the global flags: logging and the scheduler.
struct Globals {
    level: String,
    format: LogFormat,
    access_log: String,
    workers: Option<std::num::NonZeroUsize>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, default_value = "policies/gateway.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration as a reload would, without binding ports; exit 1 on error.
    Check {
        #[arg(long, default_value = "policies/gateway.yaml")]
        config: PathBuf,
        /// Treat warnings as errors (exit 1), for CI.
        #[arg(long)]
        strict: bool,
    },
    /// Create development certificates if missing and run the demo configuration.
    Demo {
        #[arg(long, default_value = "policies/demo.yaml")]
        config: PathBuf,
        /// Where the development certificates live.
        #[arg(long, default_value = "certs/dev")]
        certs: PathBuf,
    },
    /// Convert an Azure API Management policy document into a portcullis configuration (stdout).
    ImportApim {
        /// The APIM policy XML; or an APIOps extract's folder, whose composed policies are
        /// previewed per operation (without `--out`).
        policy: PathBuf,
        /// With an extract's folder: write `gateway.yaml`, `subscriptions.json`, `secrets.sh`
        /// and `REPORT.md` into this folder.
        #[arg(long, value_name = "OUTDIR")]
        out: Option<PathBuf>,
        /// Exit 1 when anything could not be translated.
        #[arg(long)]
        strict: bool,
        /// The API requires a subscription key (APIM's `subscriptionRequired`, its default): a
        /// `subscription_key` policy first in the chain, budgets per subscription.
        #[arg(long, conflicts_with = "no_subscription_required")]
        subscription_required: bool,
        /// The API requires no subscription key: none is checked, and per-subscription budgets
        /// fall back to the client address (left out).
        #[arg(long)]
        no_subscription_required: bool,
        /// The header the key is read from (APIM's `subscriptionKeyParameterNames.header`;
        /// default `Ocp-Apim-Subscription-Key`).
        #[arg(long, value_name = "NAME", requires = "subscription_required")]
        subscription_key_header: Option<String>,
        /// The query parameter the key is read from (`subscriptionKeyParameterNames.query`;
        /// default `subscription-key`).
        #[arg(long, value_name = "NAME", requires = "subscription_required")]
        subscription_key_query: Option<String>,
    },
    /// Health check for images without curl: GET an admin URL, exit 0 on 200.
    Probe {
        /// Like http://127.0.0.1:9901/healthz.
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s")]
        timeout: crate::config::values::ConfigDuration,
    },
    /// Run fixture files of requests and expectations through the configuration, offline;
    /// exit 1 when a case fails.
    Test {
        /// The configuration to test.
        #[arg(long)]
        config: PathBuf,
        /// How to report: text, junit or json.
        #[arg(long, value_enum, default_value = "text")]
        format: test::Format,
        /// Fixture files (default: tests/*.yaml beside the configuration, those for it).
        fixtures: Vec<PathBuf>,
    },
    /// Dry run: show the route and each policy's decision for one request; no backend is called.
    Trace {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, short = 'X', default_value = "GET")]
        method: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The client address the policies see.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
        /// A PEM client certificate, as if presented and verified at the handshake.
        #[arg(long)]
        client_cert: Option<PathBuf>,
        /// A bearer token, sent as `Authorization: Bearer …`.
        #[arg(long)]
        token: Option<String>,
        /// The request URL, like https://localhost/apolloapi/items.
        url: String,
    },
    /// Load-test a policy chain with a scenario file; exit 1 when a threshold fails.
    Bench {
        #[arg(long)]
        scenario: PathBuf,
        /// Base URL of a running gateway (or any HTTPS server), like https://localhost:8443.
        #[arg(long)]
        url: Option<String>,
        /// Start a gateway from this configuration and load-test it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The token issuer's external systems and their secrets and user links.
    Systems {
        #[command(flatten)]
        store: identity::StoreArgs,
        #[command(subcommand)]
        command: identity::SystemsCommand,
    },
    /// The token issuer's internal users.
    Users {
        #[command(flatten)]
        store: identity::StoreArgs,
        #[command(subcommand)]
        command: identity::UsersCommand,
    },
    /// The encrypted secret store behind `${secret:NAME}`.
    Secrets {
        /// The configuration whose `secrets` section names the store and the master key.
        #[arg(long, global = true, default_value = "policies/gateway.yaml")]
        config: PathBuf,
        /// Who is acting, for the audit log (default: the OS user).
        #[arg(long, global = true)]
        actor: Option<String>,
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// The gateway's subscriptions (APIM's subscription keys) and their keys; `import` keeps
    /// the keys callers hold.
    Subscriptions {
        #[command(flatten)]
        store: identity::StoreArgs,
        #[command(subcommand)]
        command: subscriptions::SubscriptionsCommand,
    },
    /// The token issuer's audit log, oldest first.
    Audit {
        #[command(flatten)]
        store: identity::StoreArgs,
    },
    /// Certificates: `certs dev` creates development material.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a dev CA, server, client and token-signing material.
    Dev {
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// List every certificate the configuration uses with its expiry; exit 1 when one
    /// expires within --warn-days.
    Check {
        #[arg(long, default_value = "policies/gateway.yaml")]
        config: PathBuf,
        #[arg(long, default_value_t = 30)]
        warn_days: i64,
    },
}

/// What the binary changed about the process before the command ran (the library forbids
/// `unsafe`, so `main.rs` makes the system calls), for `run` to log once logging is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpenFileLimit {
    /// The soft limit already was the hard limit, or the platform has none to raise.
    #[default]
    Unchanged,
    /// The soft limit on open files was raised to the hard limit.
    Raised {
        /// The soft limit before.
        from: u64,
        /// The soft limit now (the hard limit).
        to: u64,
    },
    /// Raising it failed; the soft limit stays.
    Kept {
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
}

/// Parses the command line and runs the command.
pub fn main(open_files: OpenFileLimit) -> ExitCode {
    let cli = Cli::parse();
    let globals =
        Globals { level: cli.log_level, format: cli.log_format, access_log: cli.access_log, workers: cli.workers };
    let result = match cli.command {
        Command::Run { config } => run::run(&config, &globals, open_files),
        Command::Check { config, strict } => check::check(&config, strict),
        Command::Demo { config, certs } => demo::demo(&config, &certs, &globals),
        Command::Certs { command: CertsCommand::Dev { dir, force } } => certs::dev(&dir, force),
        Command::Certs { command: CertsCommand::Check { config, warn_days } } => certs::check(&config, warn_days),
        Command::Bench { scenario, url, config, json } => {
            bench::bench(&bench::BenchArgs { scenario, url, config, json, workers: globals.workers })
        }
        Command::Systems { store, command } => identity::systems(&store, command),
        Command::Users { store, command } => identity::users(&store, command),
        Command::Subscriptions { store, command } => subscriptions::subscriptions(&store, command),
        Command::Audit { store } => identity::audit(&store),
        Command::Secrets { config, actor, command } => secrets::secrets(&config, &identity::actor(actor), command),
        Command::Probe { url, timeout } => probe::probe(&url, timeout.0),
        Command::ImportApim {
            policy,
            out,
            strict,
            subscription_required,
            no_subscription_required,
            subscription_key_header,
            subscription_key_query,
        } => {
            let api = crate::tools::apim::ApiSettings {
                subscription_required: match (subscription_required, no_subscription_required) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                subscription_key_header,
                subscription_key_query,
            };
            import_apim::import(&policy, out.as_deref(), strict, &api)
        }
        Command::Test { config, format, fixtures } => test::test(&config, &fixtures, format),
        Command::Trace { config, method, headers, client_ip, client_cert, token, url } => {
            trace::trace(&trace::TraceRequest { config, method, url, headers, client_ip, client_cert, token })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stdout (JSON by default); access-log lines where `--access-log` says.
fn init_logging(logging: &Globals) -> anyhow::Result<()> {
    use crate::serve::access::{set_sink, AccessSink};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&logging.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| crate::redact::ScrubbedStdout);
    match logging.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Pretty => builder.pretty().init(),
    }
    set_sink(match logging.access_log.as_str() {
        "stdout" => AccessSink::Stdout,
        "off" => AccessSink::Off,
        path => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
            AccessSink::File(file.map_err(|e| anyhow::anyhow!("cannot open the access log {path}: {e}"))?)
        }
    });
    Ok(())
}
