//! The assembled gateway: the loaded configuration's stages plus the store and a clock, shared by
//! every request. Built once at start-up (or per test) from [`crate::config::Loaded`].

use crate::adapt::watch::SharedMappings;
use crate::config::{Limits, Loaded, Principals, VendorSettings};
use crate::route::Router;
use crate::store::{self, Store, StoreError};
use crate::validate::Validator;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where "now" comes from; tests pin it.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock pinned to one instant (tests).
#[derive(Debug)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// The calendar day in Europe/Berlin at a unix-millisecond instant: CET (UTC+1), or CEST
/// (UTC+2) from the last Sunday of March 01:00 UTC to the last Sunday of October 01:00 UTC.
pub fn berlin_date(now_ms: i64) -> chrono::NaiveDate {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
    let utc = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(Utc::now);
    let year = utc.year();
    let last_sunday = |month: u32| {
        let mut d =
            NaiveDate::from_ymd_opt(year, month, 31).expect("March and October have 31 days");
        while d.weekday() != Weekday::Sun {
            d = d.pred_opt().expect("in range");
        }
        Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).expect("valid time"))
    };
    let offset = if utc >= last_sunday(3) && utc < last_sunday(10) {
        2
    } else {
        1
    };
    (utc + chrono::Duration::hours(offset)).date_naive()
}

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
    /// Push recipients' endpoints, by recipient id.
    pub push: BTreeMap<String, Arc<crate::deliver::push::Target>>,
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
            push: loaded.push_targets,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn berlin_days_around_midnight_and_dst() {
        assert_eq!(
            berlin_date(ms("2026-01-15T22:59:59Z")).to_string(),
            "2026-01-15"
        );
        assert_eq!(
            berlin_date(ms("2026-01-15T23:00:00Z")).to_string(),
            "2026-01-16"
        );
        assert_eq!(
            berlin_date(ms("2026-07-15T21:59:59Z")).to_string(),
            "2026-07-15"
        );
        assert_eq!(
            berlin_date(ms("2026-07-15T22:00:00Z")).to_string(),
            "2026-07-16"
        );
        // 2026: CEST from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(
            berlin_date(ms("2026-03-28T23:30:00Z")).to_string(),
            "2026-03-29"
        );
        assert_eq!(
            berlin_date(ms("2026-10-25T22:30:00Z")).to_string(),
            "2026-10-25"
        );
        assert_eq!(
            berlin_date(ms("2026-10-24T22:30:00Z")).to_string(),
            "2026-10-25"
        );
    }
}
