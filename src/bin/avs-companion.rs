//! `avs-companion`: see `avsd::companion`.

fn main() -> std::process::ExitCode {
    avsd::companion::cli::main()
}
