//! `avs-companion`: see the `avs_companion` library.

fn main() -> std::process::ExitCode {
    avs_companion::cli::main()
}
