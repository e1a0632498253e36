//! `attrib-custom`: the `attrib` command with Element-wise Grad-CAM added.

fn main() -> std::process::ExitCode {
    attrib_cli::main_with(&attrib_custom_method::METHODS)
}
