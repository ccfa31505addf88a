//! The composition root: builds the runtime from the settings [`crate::config::load`] returns —
//! the server's TLS configuration ([`crate::tls`]), the push recipients' HTTPS clients
//! ([`crate::deliver::push::Target`]) and the [`Gateway`] — and runs the HTTP server
//! ([`crate::api::run`]) together with the background workers: the batch sealer, the push lanes,
//! retention and the mapping watcher.
//!
//! `weiche serve` and `weiche check` go through [`load`], so a configuration `check` accepts is
//! one `serve` starts with. Commands that need only the settings (`weiche purge`, `weiche audit
//! verify`, `weiche pseudonym`) call [`crate::config::load`] and build nothing they do not use;
//! `convert` and `conformance` need neither.

use crate::config::{self, Loaded, Problem};
use crate::deliver::push::Target;
use crate::gateway::Gateway;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// The runtime objects built from the settings.
#[derive(Debug, Default)]
pub struct Runtime {
    /// The server's TLS configuration; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Push recipients' HTTPS clients, by recipient id.
    pub push: BTreeMap<String, Arc<Target>>,
    /// Alert webhooks' HTTPS clients, by alert kind.
    pub alerts: BTreeMap<String, Arc<Target>>,
}

/// Builds the server's TLS configuration and the push clients of a loaded configuration: reads
/// the certificate, key and CA files now, so that a bad file is a configuration problem (with
/// the configuration file's name) and not a failure at the first handshake.
pub fn build(loaded: &Loaded) -> Result<Runtime, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |message: String| {
        problems.push(Problem {
            file: loaded.origin.clone(),
            line: 0,
            message,
        })
    };
    let tls = match &loaded.tls {
        Some(settings) => match crate::tls::server_config(settings) {
            Ok(config) => Some(config),
            Err(m) => {
                problem(format!("[tls]: {m}"));
                None
            }
        },
        None => None,
    };
    let mut push = BTreeMap::new();
    for (recipient, endpoint) in &loaded.push_endpoints {
        match Target::new(recipient, endpoint) {
            Ok(target) => {
                push.insert(recipient.clone(), Arc::new(target));
            }
            Err(m) => problem(format!("recipient {recipient}: [recipients.push]: {m}")),
        }
    }
    let mut alerts = BTreeMap::new();
    for (kind, endpoint) in &loaded.alert_endpoints {
        match Target::new(&format!("alert {kind}"), endpoint) {
            Ok(target) => {
                alerts.insert(kind.clone(), Arc::new(target));
            }
            Err(m) => problem(format!("[alerts.{kind}]: {m}")),
        }
    }
    if problems.is_empty() {
        Ok(Runtime { tls, push, alerts })
    } else {
        Err(problems)
    }
}

/// Loads the configuration at `path` (see [`crate::config::load`]) and builds its runtime
/// objects: what `weiche serve` starts with and `weiche check` checks.
pub fn load(path: Option<&Path>) -> Result<(Loaded, Runtime), Vec<Problem>> {
    let loaded = config::load(path)?;
    let runtime = build(&loaded)?;
    Ok((loaded, runtime))
}

/// Runs the gateway on a bound listener until `shutdown` resolves: prepares the partitions this
/// month's deliveries need, starts the mapping watcher (when mappings come from a directory),
/// the batch sealer, the push lanes and retention (purges at start and every hour), serves HTTP
/// (HTTPS with `runtime.tls`), and stops the workers once the server has finished the requests
/// in flight.
pub async fn serve(
    listener: std::net::TcpListener,
    gw: Arc<Gateway>,
    runtime: Runtime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The partitions this month's deliveries need exist before the first request.
    crate::retention::prepare(gw.store.as_ref(), &gw.retention).await;
    // Hot reload of the mappings directory, for as long as the server runs.
    let _watcher = match &gw.mappings_dir {
        Some(dir) => match crate::adapt::watch::watch(dir.clone(), gw.mappings.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch {} for mapping changes: {e}", dir.display());
                None
            }
        },
        None => None,
    };
    let (stop_sealer, sealer_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_pusher, pusher_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_retention, retention_stopped) = tokio::sync::oneshot::channel::<()>();
    let pusher = tokio::spawn(crate::deliver::push::run_pusher(
        gw.clone(),
        runtime.push,
        async move {
            let _ = pusher_stopped.await;
        },
    ));
    let sealer = tokio::spawn(crate::deliver::run_sealer(gw.clone(), async move {
        let _ = sealer_stopped.await;
    }));
    let retention = tokio::spawn(crate::retention::run(gw.clone(), async move {
        let _ = retention_stopped.await;
    }));
    let (stop_indexer, indexer_stopped) = tokio::sync::oneshot::channel::<()>();
    let indexer = tokio::spawn(crate::audit::run_indexer(gw.store.clone(), async move {
        let _ = indexer_stopped.await;
    }));
    let (stop_alerts, alerts_stopped) = tokio::sync::oneshot::channel::<()>();
    let alerts = tokio::spawn(crate::deliver::alerts::run(
        gw.clone(),
        runtime.alerts,
        async move {
            let _ = alerts_stopped.await;
        },
    ));
    let result = crate::api::run(listener, gw, runtime.tls, shutdown).await;
    let _ = stop_sealer.send(());
    let _ = stop_pusher.send(());
    let _ = sealer.await;
    let _ = stop_retention.send(());
    let _ = pusher.await;
    let _ = retention.await;
    let _ = stop_alerts.send(());
    let _ = alerts.await;
    let _ = stop_indexer.send(());
    let _ = indexer.await;
    result
}
