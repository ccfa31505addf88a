//! Rate limits (docs/security.md, "Rate limits"): requests per authenticated principal, and
//! failed authentications per client address, each a GCRA token bucket of the `governor`
//! crate. A caller over a limit is answered `429 R429` with `Retry-After` in whole seconds (at
//! least 1), before the endpoint does any work.
//!
//! The per-principal limiter is keyed by the configured principal id, so its memory is bounded
//! by the configuration. The failure limiter is keyed by the peer address (IPv6 by its /64, as
//! one host usually has a whole /64), only counts requests whose credentials fail, and forgets
//! idle addresses when it tracks many; callers with valid credentials are never slowed by it.

use crate::config::Limits;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// Client addresses tracked before idle ones are dropped.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// A keyed limiter with an explicit clock (for `Retry-After`).
type Keyed<K> = RateLimiter<
    K,
    DashMapStateStore<K>,
    DefaultClock,
    NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The server's rate limiters, shared by all workers.
pub struct RateLimits {
    principals: Option<Keyed<String>>,
    failures: Option<Keyed<IpAddr>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("principals", &self.principals.is_some())
            .field("failures", &self.failures.is_some())
            .finish()
    }
}

/// A quota of `per_second` with a bucket of `burst`; `None` when `per_second` is 0 (off).
fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl RateLimits {
    /// Limiters as `[limits]` configures them.
    pub fn new(limits: &Limits) -> RateLimits {
        let clock = DefaultClock::default();
        RateLimits {
            principals: quota(limits.requests_per_second, limits.burst)
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            failures: quota(limits.failed_auth_per_second, limits.failed_auth_burst)
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            clock,
        }
    }

    /// Counts one request of an authenticated principal; `Err(seconds)` to wait when over the
    /// limit.
    pub fn check_principal(&self, id: &str) -> Result<(), u64> {
        match &self.principals {
            Some(limiter) => self.check(limiter, &id.to_string()),
            None => Ok(()),
        }
    }

    /// Counts one failed authentication from `addr`; `Err(seconds)` to wait when over the
    /// limit.
    pub fn check_failure(&self, addr: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.failures else {
            return Ok(());
        };
        let result = self.check(limiter, &address_key(addr));
        if limiter.len() > MAX_TRACKED_ADDRESSES {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        result
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K>,
        key: &K,
    ) -> Result<(), u64> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            retry_after_secs(wait)
        })
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 prefix (an IPv4-mapped IPv6
/// address counts as the IPv4 address).
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(rps: u32, burst: u32, failed: u32, failed_burst: u32) -> Limits {
        Limits {
            requests_per_second: rps,
            burst,
            failed_auth_per_second: failed,
            failed_auth_burst: failed_burst,
            ..Limits::default()
        }
    }

    #[test]
    fn a_principal_over_its_burst_waits_and_others_do_not() {
        let l = RateLimits::new(&limits(1, 2, 1, 1));
        assert_eq!(l.check_principal("a"), Ok(()));
        assert_eq!(l.check_principal("a"), Ok(()));
        let wait = l.check_principal("a").unwrap_err();
        assert!((1..=1).contains(&wait), "{wait}");
        assert_eq!(l.check_principal("b"), Ok(()));
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = RateLimits::new(&limits(0, 0, 0, 0));
        for _ in 0..10_000 {
            assert_eq!(l.check_principal("a"), Ok(()));
            assert_eq!(l.check_failure("192.0.2.1".parse().unwrap()), Ok(()));
        }
    }

    #[test]
    fn failures_are_counted_per_address_and_ipv6_per_64() {
        let l = RateLimits::new(&limits(0, 0, 1, 1));
        assert_eq!(l.check_failure("192.0.2.1".parse().unwrap()), Ok(()));
        assert!(l.check_failure("192.0.2.1".parse().unwrap()).is_err());
        assert_eq!(l.check_failure("192.0.2.2".parse().unwrap()), Ok(()));
        assert_eq!(l.check_failure("2001:db8::1".parse().unwrap()), Ok(()));
        assert!(
            l.check_failure("2001:db8::ffff:1".parse().unwrap())
                .is_err()
        );
        assert_eq!(l.check_failure("2001:db8:0:1::1".parse().unwrap()), Ok(()));
        assert!(
            l.check_failure("::ffff:192.0.2.1".parse().unwrap())
                .is_err()
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(7)), 7);
    }

    #[test]
    fn many_addresses_do_not_grow_without_bound() {
        // A bucket that refills within a microsecond: earlier addresses are idle at once.
        let l = RateLimits::new(&limits(0, 0, 1_000_000, 1));
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            let _ = l.check_failure(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let tracked = l.failures.as_ref().unwrap().len();
        assert!(tracked <= MAX_TRACKED_ADDRESSES + 1, "{tracked}");
    }
}
