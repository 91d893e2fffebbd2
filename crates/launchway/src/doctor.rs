//! `launchway doctor` and `launchway settings`: is this host ready, and what
//! the settings are.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_daemon::doctor::{Report, Verdict};
use launchway_daemon::{DEFAULTS_FILE, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum SettingsCommand {
    /// Print the settings file with every key at its default (what `make
    /// install` writes to /etc/launchway/launchway.toml when it is absent).
    Defaults,
    /// Print the settings in effect: the file (checked) with defaults filled in.
    Show,
}

pub(crate) fn settings(path: Option<&Path>, command: SettingsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SettingsCommand::Defaults => print!("{DEFAULTS_FILE}"),
        SettingsCommand::Show => {
            let settings = Settings::load(path)?;
            println!("# {}", Settings::source(path));
            print!("{}", settings.to_toml());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn doctor(path: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(path)?;
    let source = Settings::source(path);
    let report =
        crate::admin::runtime()?.block_on(launchway_daemon::doctor::doctor(&settings, &source));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(report: &Report) {
    println!(
        "Checking this host for `launchway serve` (settings: {})",
        report.settings
    );
    let width = report
        .checks
        .iter()
        .map(|check| check.name.len())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        println!(
            "  {:<4}  {:<width$}  {}",
            check.verdict.label(),
            check.name,
            check.detail
        );
        if let Some(fix) = &check.fix {
            println!("  {:<4}  {:<width$}  fix: {fix}", "", "");
        }
    }
    let failed = report.count(Verdict::Fail);
    println!(
        "{} checks: {} ok, {} warning(s), {} failed, {} skipped. {}",
        report.checks.len(),
        report.count(Verdict::Ok),
        report.count(Verdict::Warn),
        failed,
        report.count(Verdict::Skip),
        if failed == 0 {
            "The host is ready."
        } else {
            "The host is not ready: fix what failed."
        }
    );
}
