//! `launchway` with failpoints compiled in, for the crash tests
//! (`cargo build -p launchway --features failpoints --bin launchway-failpoints`).
//! A binary of its own name, so it builds in the workspace's target
//! directory, sharing every dependency, and never replaces `launchway`.

fn main() -> std::process::ExitCode {
    launchway::main()
}
