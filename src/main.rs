//! The `weiche` binary: everything happens in [`weiche::cli`].

fn main() -> std::process::ExitCode {
    weiche::cli::main()
}
