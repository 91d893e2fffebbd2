//! `launchway`: the program is the library's `main` (shared with the crash
//! tests' `launchway-failpoints`).

fn main() -> std::process::ExitCode {
    launchway::main()
}
