//! `membershipd`, the unibus reference server. See `membershipd --help`.

fn main() -> std::process::ExitCode {
    unibus_server::cli::main()
}
