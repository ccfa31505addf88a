//! The assembled gateway: the loaded configuration's stages plus the store and a clock, shared by
//! every request. Built once at start-up (or per test) from [`crate::config::Loaded`].

use crate::adapt::watch::SharedMappings;
use crate::clock::{Clock, SystemClock};
use crate::config::{Limits, Loaded, Principals, VendorSettings};
use crate::route::Router;
use crate::store::{self, Store, StoreError};
use crate::validate::Validator;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a request needs.
pub struct Gateway {
    /// Input limits.
    pub limits: Limits,
    /// Vendors' settings.
    pub vendors: BTreeMap<String, VendorSettings>,
    /// Who may call.
    pub principals: Principals,
    /// Loaded mappings (swapped by hot reload).
    pub mappings: SharedMappings,
    /// Where mappings are loaded from (`None`: built in).
    pub mappings_dir: Option<PathBuf>,
    /// Canonical schema and code lists.
    pub validator: Arc<Validator>,
    /// Recipients.
    pub router: Arc<Router>,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Subject key of the audit trail.
    pub audit_key: crate::audit::AuditKey,
    /// Push worker settings.
    pub push_worker: crate::config::push::PushWorkerConfig,
    /// This process's id among several on one database (owner of push lanes).
    pub instance: String,
    /// How long stored data is kept.
    pub retention: crate::config::Retention,
    /// Where deliveries stage output past their memory budget while their bodies arrive
    /// (`<data_dir>/staging`; the files are anonymous and vanish with the delivery).
    pub staging_dir: PathBuf,
}

impl Gateway {
    /// Assembles a gateway from a loaded configuration and an opened store.
    pub fn new(loaded: Loaded, store: Arc<dyn Store>) -> Gateway {
        Gateway {
            limits: loaded.limits,
            vendors: loaded.vendors,
            principals: loaded.principals,
            mappings: Arc::new(ArcSwap::from_pointee(loaded.mappings)),
            mappings_dir: loaded.mappings_dir,
            validator: Arc::new(loaded.validator),
            router: Arc::new(loaded.router),
            store,
            clock: Arc::new(SystemClock),
            audit_key: loaded.audit_key,
            push_worker: loaded.push_worker,
            instance: uuid::Uuid::new_v4().to_string(),
            retention: loaded.retention,
            staging_dir: loaded.data_dir.join("staging"),
        }
    }

    /// Opens the configured store (running migrations) and assembles the gateway.
    pub async fn open(loaded: Loaded) -> Result<Gateway, StoreError> {
        let store = store::connect(&loaded.database_url).await?;
        Ok(Gateway::new(loaded, store))
    }
}
