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

/// Serialises reloads. Without it a reload that read the files before a deployment wrote them
/// could store its older set after the deployment's own reload, and the deployed version would
/// leave service until the next change.
static RELOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reloads now and swaps the result in; returns the new set. Reloads run one at a time, so the
/// last one to finish has read the files as the last writer left them.
pub fn reload(dir: &Path, shared: &SharedMappings) -> Arc<MappingSet> {
    let _one_at_a_time = RELOAD.lock().unwrap_or_else(|e| e.into_inner());
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A deployment writes the file and reloads; a reload running beside it (the watcher's)
    /// must never leave an older set in service after the deployment's reload has returned.
    #[test]
    fn a_concurrent_reload_never_stores_an_older_set() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/klidas-json.toml");
        let original = std::fs::read_to_string(shipped).unwrap();
        let file = dir.path().join("klidas-json.toml");
        std::fs::write(&file, &original).unwrap();
        let shared: SharedMappings = Arc::new(ArcSwap::from_pointee(
            MappingSet::load_dir(dir.path()).unwrap(),
        ));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (dir, shared, stop) = (dir.path().to_path_buf(), shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reload(&dir, &shared);
                    // Leave the lock to the deployments now and then (std's mutex is not fair).
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };
        for i in 0..1000 {
            let text = original.replacen("description = \"", &format!("description = \"{i} "), 1);
            std::fs::write(&file, &text).unwrap();
            reload(dir.path(), &shared);
            let live = shared.load().get("klidas-json").unwrap().hash.clone();
            assert_eq!(
                live,
                hex::encode(Sha256::digest(text.as_bytes())),
                "deployment {i}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap();
    }
}
