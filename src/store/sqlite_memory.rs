//! SQLite's own memory: the process-wide allocator SQLite uses, and its memory statistics.
//!
//! The bundled SQLite allocates through glibc's `malloc` and keeps a usage counter behind a
//! global mutex on every allocation. At the ingest peak that was about a fifth of the store
//! writer's thread (`perf`, BENCHMARKS.md). [`configure`] hands SQLite mimalloc (as the Rust
//! side uses) and turns the counter off; Weiche reads neither the counter nor a heap limit.

use libmimalloc_sys::{mi_free, mi_good_size, mi_malloc, mi_realloc, mi_usable_size};
use libsqlite3_sys as ffi;
use std::os::raw::{c_int, c_void};

unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
    // SAFETY: SQLite asks for n > 0 bytes; mimalloc returns null when it cannot allocate, which
    // SQLite handles as SQLITE_NOMEM.
    unsafe { mi_malloc(n.max(0) as usize) }
}

unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `malloc`/`realloc` above returned.
    unsafe { mi_free(p) }
}

unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as `malloc` and `free`: p came from this allocator.
    unsafe { mi_realloc(p, n.max(0) as usize) }
}

unsafe extern "C" fn size(p: *mut c_void) -> c_int {
    // SAFETY: p came from this allocator (SQLite asks only about its own allocations).
    let n = unsafe { mi_usable_size(p) };
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn roundup(n: c_int) -> c_int {
    // SAFETY: a pure function of its argument.
    let good = unsafe { mi_good_size(n.max(0) as usize) };
    c_int::try_from(good).unwrap_or(n)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// Wraps the methods table so that it can be a `static` (it holds a raw pointer, always null).
struct Methods(ffi::sqlite3_mem_methods);

// SAFETY: the table is never written after it is built, and its one pointer is null.
unsafe impl Sync for Methods {}

static METHODS: Methods = Methods(ffi::sqlite3_mem_methods {
    xMalloc: Some(malloc),
    xFree: Some(free),
    xRealloc: Some(realloc),
    xSize: Some(size),
    xRoundup: Some(roundup),
    xInit: Some(init),
    xShutdown: Some(shutdown),
    pAppData: std::ptr::null_mut(),
});

/// Gives SQLite mimalloc and turns its memory statistics off. It must run before SQLite is
/// first used in this process (the binary calls it first thing); later it changes nothing,
/// and says so with `false`.
pub fn configure() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        // SAFETY: sqlite3_config is documented to be called before sqlite3_initialize and from
        // one thread; the OnceLock makes it one call, and after initialisation SQLite refuses it
        // with SQLITE_MISUSE without changing anything. The methods table is 'static.
        unsafe {
            let mem = ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &METHODS.0 as *const ffi::sqlite3_mem_methods,
            );
            let stats = ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
            mem == ffi::SQLITE_OK && stats == ffi::SQLITE_OK
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn allocator_sizes_are_consistent() {
        // SAFETY: the functions are called as SQLite would: malloc, size, realloc, free.
        unsafe {
            let p = super::malloc(100);
            assert!(!p.is_null());
            assert!(super::size(p) >= 100);
            assert!(super::roundup(100) >= 100);
            let q = super::realloc(p, 5000);
            assert!(!q.is_null());
            assert!(super::size(q) >= 5000);
            super::free(q);
        }
    }
}
