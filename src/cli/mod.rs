//! The `weiche` command line: `serve`, `check`, `convert`, `conformance`, `pseudonym`, `audit`,
//! `purge`. `serve` and `check` assemble the runtime through [`crate::app`]; the others read the
//! settings ([`crate::config::load`]) and open only what they use.

pub mod conformance;
mod convert;

use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Weiche — interoperability gateway for the German social sector.
#[derive(Debug, Parser)]
#[command(name = "weiche", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (default: embedded demo configuration on 127.0.0.1:8080).
    Serve {
        /// Configuration file (TOML); env WEICHE_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check configuration, mappings, policies, schema and code lists exactly as start-up does.
    Check {
        /// Configuration file (TOML); env WEICHE_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Convert a local file: canonical records (NDJSON) on stdout, receipt on stderr,
    /// exit 0 for E1/E2, 1 for E3, 2 for E4.
    Convert(convert::ConvertArgs),
    /// Run the golden cases of a directory (default: conformance-tests/cases) and report differences.
    Conformance {
        /// Directory of `<format>/<case>/` folders.
        dir: Option<PathBuf>,
    },
    /// Print the pseudonym of one value, or a linkage key.
    Pseudonym(PseudonymArgs),
    /// Work with the audit trail.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Purge what is past its retention ([retention] in the configuration) now, as `serve` does
    /// every hour; print what was purged. Exit 0 done, 2 could not run.
    Purge {
        /// Configuration file (TOML); env WEICHE_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only count what would be purged; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Subcommands of `weiche audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit hash chain of the configured store and report the first broken link;
    /// exit 0 when intact, 1 when broken, 2 when it could not be checked.
    Verify {
        /// Configuration file (TOML); env WEICHE_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Arguments of `weiche pseudonym`.
#[derive(Debug, clap::Args)]
pub struct PseudonymArgs {
    /// Use this recipient's pseudonym key from the configuration (current key, or the one named
    /// by --kid).
    #[arg(long, conflicts_with = "key_hex")]
    recipient: Option<String>,
    /// Configuration file for --recipient (env WEICHE_CONFIG; default: embedded defaults).
    #[arg(long, requires = "recipient")]
    config: Option<PathBuf>,
    /// Key id (with --key-hex; with --recipient: pick an older key).
    #[arg(long)]
    kid: Option<String>,
    /// Key as hex.
    #[arg(long, requires = "kid")]
    key_hex: Option<String>,
    /// Canonical path without indices, e.g. client.client_id.
    #[arg(long, default_value = "client.linkage_key")]
    path: String,
    /// Vendor, for vendor-scoped ids.
    #[arg(long)]
    vendor: Option<String>,
    /// Compute a linkage key from FAMILY_NAME GIVEN_NAMES BIRTH_DATE.
    #[arg(long)]
    linkage: bool,
    /// The value (or, with --linkage, the three parts).
    values: Vec<String>,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Convert(args) => convert::run(args),
        Command::Conformance { dir } => conformance::main(dir),
        Command::Pseudonym(args) => pseudonym(args),
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => audit_verify(config),
        Command::Purge { config, dry_run } => purge(config, dry_run),
    }
}

fn purge(config_path: Option<PathBuf>, dry_run: bool) -> ExitCode {
    let loaded = match config::load(config_path.as_deref()) {
        Ok(l) => l,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let store = match crate::store::connect(&loaded.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot open the store: {e}");
                return ExitCode::from(2);
            }
        };
        match crate::retention::run_once(store.as_ref(), &loaded.retention, dry_run).await {
            Ok((partitions, r)) => {
                if r.skipped {
                    println!("another instance is purging right now; nothing done");
                    return ExitCode::SUCCESS;
                }
                for p in &partitions.created {
                    println!("partition created: {p}");
                }
                println!(
                    "{}: {} record(s), {} holding(s), {} item(s), {} batch(es), {} audit \
                     event(s), {} receipt(s)",
                    if r.dry_run { "would purge" } else { "purged" },
                    r.records,
                    r.holdings,
                    r.items,
                    r.batches,
                    r.audit_events,
                    r.receipts
                );
                for p in &r.partitions_dropped {
                    println!(
                        "partition {}: {p}",
                        if r.dry_run { "to drop" } else { "dropped" }
                    );
                }
                if let Some(a) = &r.audit_anchor {
                    println!("audit chain anchor: event {} hash {}", a.seq, a.hash);
                }
                if r.overdue_items + r.overdue_records > 0 {
                    println!(
                        "kept past retention: {} item(s), {} record(s)",
                        r.overdue_items, r.overdue_records
                    );
                }
                for n in partitions.notes.iter().chain(&r.notes) {
                    println!("note: {n}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot purge: {e}");
                ExitCode::from(2)
            }
        }
    })
}

fn audit_verify(config_path: Option<PathBuf>) -> ExitCode {
    let loaded = match config::load(config_path.as_deref()) {
        Ok(l) => l,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let store = match crate::store::connect(&loaded.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot open the store: {e}");
                return ExitCode::from(2);
            }
        };
        match crate::audit::verify(store.as_ref()).await {
            Ok(v) => match &v.first_broken {
                None => {
                    println!(
                        "audit chain intact: {} event(s), last hash {}",
                        v.events, v.last_hash
                    );
                    if let Some(a) = &v.anchor {
                        println!(
                            "(events up to {} were purged by retention; the chain starts after \
                             their anchor, hash {})",
                            a.seq, a.hash
                        );
                    }
                    ExitCode::SUCCESS
                }
                Some(b) => {
                    println!(
                        "audit chain broken at event {}: {} ({} event(s) read, last hash {})",
                        b.seq, b.reason, v.events, v.last_hash
                    );
                    ExitCode::from(1)
                }
            },
            Err(e) => {
                eprintln!("cannot read the audit trail: {e}");
                ExitCode::from(2)
            }
        }
    })
}

fn print_problems(problems: &[config::Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!("{} problem(s) found", problems.len());
}

/// Prints the warnings about secret files (to stderr; they do not change the exit status).
fn print_warnings(loaded: &config::Loaded) {
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
}

fn check(config_path: Option<PathBuf>) -> ExitCode {
    match crate::app::load(config_path.as_deref()) {
        Ok((loaded, _)) if !loaded.mappings.failures.is_empty() => {
            print_warnings(&loaded);
            let problems: Vec<config::Problem> = loaded
                .mappings
                .failures
                .iter()
                .map(|f| config::Problem::from_text(&f.to_string()))
                .collect();
            print_problems(&problems);
            ExitCode::from(1)
        }
        Ok((loaded, _)) => {
            print_warnings(&loaded);
            for n in &loaded.notices {
                println!("note: {n}");
            }
            println!(
                "configuration ok: {} mapping(s), {} recipient(s), {} principal(s), {} code list(s)",
                loaded.mappings.mappings.len(),
                loaded.router.recipients().len(),
                loaded.principals.all().count(),
                loaded.validator.codelist_ids().len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print_problems(&problems);
            ExitCode::from(1)
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    // Logging, and OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set; flushed and stopped when
    // `serve` returns (after the runtime, declared later, has been dropped).
    let _telemetry = crate::telemetry::init_from_env();
    let (loaded, app) = match crate::app::load(config_path.as_deref()) {
        Ok(l) => l,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        crate::adapt::watch::log_failures(
            &loaded.mappings,
            "its format is not served until the file loads",
        );
        for n in &loaded.notices {
            tracing::info!("{n}");
        }
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let listen = loaded.listen.clone();
        let demo = loaded.demo_tokens.clone();
        let gw = match crate::gateway::Gateway::open(loaded).await {
            Ok(gw) => std::sync::Arc::new(gw),
            Err(e) => {
                eprintln!("cannot open the store: {e}");
                return ExitCode::from(1);
            }
        };
        let listener = match std::net::TcpListener::bind(&listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(listen);
        eprintln!(
            "weiche listening on {}://{addr} (store: {})",
            if app.tls.is_some() { "https" } else { "http" },
            gw.store.backend()
        );
        for (id, path) in &demo {
            eprintln!("demo token of {id}: {}", path.display());
        }
        let shutdown = async {
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("install SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: finishing requests in flight");
        };
        match crate::app::serve(listener, gw, app, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server failed: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn pseudonym(args: PseudonymArgs) -> ExitCode {
    let key = match (&args.recipient, &args.key_hex, &args.kid) {
        (Some(recipient), _, kid) => {
            let loaded = match config::load(args.config.as_deref()) {
                Ok(l) => l,
                Err(problems) => {
                    print_problems(&problems);
                    return ExitCode::from(2);
                }
            };
            let Some(r) = loaded.router.recipient(recipient) else {
                eprintln!("no recipient '{recipient}' in the configuration");
                return ExitCode::from(2);
            };
            let older = loaded
                .older_keys
                .get(recipient)
                .cloned()
                .unwrap_or_default();
            match kid {
                None => r.key.clone(),
                Some(kid) if *kid == r.key.kid => r.key.clone(),
                Some(kid) => match older.into_iter().find(|k| k.kid == *kid) {
                    Some(k) => k,
                    None => {
                        eprintln!("recipient '{recipient}' has no key '{kid}'");
                        return ExitCode::from(2);
                    }
                },
            }
        }
        (None, Some(hex_key), Some(kid)) => {
            let Ok(secret) = hex::decode(hex_key.trim()) else {
                eprintln!("--key-hex must be hex");
                return ExitCode::from(2);
            };
            crate::consent::PseudonymKey::new(kid.clone(), secret)
        }
        _ => {
            eprintln!("give --recipient ID, or --kid KID --key-hex HEX");
            return ExitCode::from(2);
        }
    };
    if args.linkage {
        let [family, given, birth] = args.values.as_slice() else {
            eprintln!("--linkage needs FAMILY_NAME GIVEN_NAMES BIRTH_DATE");
            return ExitCode::from(2);
        };
        let given = (!given.is_empty()).then_some(given.as_str());
        println!("{}", key.linkage_key(family, given, birth));
        return ExitCode::SUCCESS;
    }
    let [value] = args.values.as_slice() else {
        eprintln!("give exactly one VALUE");
        return ExitCode::from(2);
    };
    match &args.vendor {
        Some(v) => println!("{}", key.field(&args.path, v, value)),
        None => println!("{}", key.pseudonym(&args.path, value)),
    }
    ExitCode::SUCCESS
}
