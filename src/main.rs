//! The `weiche` binary: everything happens in [`weiche::cli`].

/// mimalloc instead of glibc's allocator: the engines allocate many small values per record
/// (JSON trees, strings), and glibc's `malloc`/`free` took about a fifth of a pipeline thread's
/// time (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (15) in `mimalloc.h`, the option before `mi_option_use_numa_nodes`
/// in mimalloc 2 and 3 alike; the Rust bindings do not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// How long (ms) freed memory stays with the process before mimalloc gives it back (its
/// default is 10). At 10 ms a delivery's chunks, allocated on one thread and freed on another,
/// kept the server of a 1 GB CSV delivery at 279 MB RSS (target 256 MB). At 0, every page that
/// fell empty went back at once: under load 0.65–0.75 `madvise` calls a record, mostly from
/// SQLite's B-tree balancing and statement journals, each page faulted in again by the next
/// allocation. At 1 ms: 0.19–0.20 calls a record, and the 1 GB CSV delivery peaked at 212 MB
/// against 210 MB at 0 (BENCHMARKS.md, session of 2026-12-07 17:38).
const PURGE_DELAY_MS: std::os::raw::c_long = 1;

fn main() -> std::process::ExitCode {
    // mimalloc read `MIMALLOC_PURGE_DELAY` already; set in the environment, it wins (empty
    // counts as not set, as for every variable of ours: docs/configuration.md).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none_or(|v| v.is_empty()) {
        // SAFETY: sets one of mimalloc's global options, before any thread is started.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // No transparent huge pages for this process: mimalloc commits its arenas whole, the kernel
    // backed them with 2 MB pages, and a purge of a few 4 KB pages inside one gives nothing
    // back. A server after two small deliveries held 85–90 MB instead of about 55 MB, and the
    // 1 GB CSV delivery on a warm server peaked over 256 MB (BENCHMARKS.md).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) PR_SET_THP_DISABLE only sets a flag of this process; no memory of ours
    // is read or written.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // SQLite allocates with mimalloc too, without its global usage counter; before any
    // connection exists (weiche::store::sqlite_memory).
    weiche::store::sqlite_memory::configure();
    weiche::cli::main()
}
