//! Hot reload: the mappings directory is watched; after a change (debounced) every file is loaded
//! and checked again and the new set is swapped in atomically. Deliveries in flight keep the
//! mapping they started with (they hold an `Arc` of it); a file that fails to load never replaces
//! a working mapping and is reported by `GET /api/v1/admin/mappings` and in the log.

use super::MappingSet;
use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// The loaded mappings, swappable while the server runs.
pub type SharedMappings = Arc<ArcSwap<MappingSet>>;

/// Reloads now and swaps the result in; returns the new set.
pub fn reload(dir: &Path, shared: &SharedMappings) -> Arc<MappingSet> {
    let previous = shared.load_full();
    let next = Arc::new(MappingSet::reload_dir(dir, &previous));
    for (id, m) in &next.mappings {
        match previous.mappings.get(id) {
            Some(old) if old.hash == m.hash => {}
            Some(_) => tracing::info!(format = %id, version = %m.hash, "mapping reloaded"),
            None => tracing::info!(format = %id, version = %m.hash, "mapping loaded"),
        }
    }
    for id in previous.mappings.keys() {
        if !next.mappings.contains_key(id) {
            tracing::info!(format = %id, "mapping removed");
        }
    }
    log_failures(&next, "the previous version, if any, stays");
    shared.store(next.clone());
    next
}

/// Logs every file of `set` that failed to load, as a warning with its file, line (0 when
/// unknown) and error as fields and all three in the message; `consequence` says what happens
/// to its format.
pub fn log_failures(set: &MappingSet, consequence: &str) {
    for failure in &set.failures {
        tracing::warn!(
            file = %failure.file(),
            line = failure.line(),
            error = %failure.message(),
            "mapping file failed to load ({consequence}): {failure}"
        );
    }
}

/// A running watcher; dropping it stops watching.
pub struct MappingWatcher {
    _watcher: RecommendedWatcher,
}

/// Watches `dir` and reloads into `shared` after every change.
pub fn watch(dir: PathBuf, shared: SharedMappings) -> notify::Result<MappingWatcher> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("mapping-reload".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Debounce: editors write a file in several steps.
                while rx.recv_timeout(Duration::from_millis(150)).is_ok() {}
                reload(&dir, &shared);
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(MappingWatcher { _watcher: watcher })
}
