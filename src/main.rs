//! The `weiche` binary: everything happens in [`weiche::cli`].

/// mimalloc instead of glibc's allocator: the engines allocate many small values per record
/// (JSON trees, strings), and glibc's `malloc`/`free` took about a fifth of a pipeline thread's
/// time (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weiche::cli::main()
}
