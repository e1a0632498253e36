//! The `attrib` binary: the command of `attrib_cli` with the built-in methods.

fn main() -> std::process::ExitCode {
    attrib_cli::main_with(&[])
}
