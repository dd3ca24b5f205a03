//! `rootpack-runtime`: the OCI runtime face of rootpack (runc's command line).

fn main() -> std::process::ExitCode {
    rootpack::runtime::cli::main()
}
