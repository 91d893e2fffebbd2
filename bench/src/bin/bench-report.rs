//! The end of `make bench` (issue 27): one table of every bench's figures.
//!
//! - `bench-report DIR [BENCH…]` reads `DIR/<bench>.json` of each bench
//!   (by default every bench `make bench` runs; any other bench JSON in DIR
//!   is added), prints `bench | measure | figure | baseline | ratio | target
//!   | met`, writes `DIR/summary.json` and copies it to
//!   `target/bench/latest.json`. It exits non-zero when a target is not met
//!   or a bench wrote no JSON (it failed, or did not run).
//! - `bench-report compare BEFORE AFTER` prints two runs side by side, each
//!   a `summary.json`, one bench's JSON or a run's directory.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../report.rs"]
mod report;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// The benches `make bench` runs, in its order.
const BENCHES: &[&str] = &[
    "push-bench",
    "deploy-bench",
    "https-bench",
    "engine-bench",
    "activate-bench",
    "services-bench",
    "backup-bench",
    "web-bench",
    "api-bench",
    "builders-bench",
];

/// Where the newest summary is copied.
const LATEST: &str = "target/bench/latest.json";

const USAGE: &str = "usage: bench-report DIR [BENCH…] | bench-report compare BEFORE AFTER";

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some("compare") => {
            let [_, before, after] = args.as_slice() else {
                bail!("{USAGE}");
            };
            compare(Path::new(before), Path::new(after))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(dir) => summarize(Path::new(dir), &args[1..]),
    }
}

/// The figures of one bench's JSON file.
fn bench_rows(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let document: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    document["figures"]
        .as_array()
        .cloned()
        .with_context(|| format!("{} has no figures", path.display()))
}

fn summarize(dir: &Path, only: &[String]) -> anyhow::Result<ExitCode> {
    let mut expected: Vec<String> = if only.is_empty() {
        BENCHES.iter().map(|b| (*b).to_owned()).collect()
    } else {
        only.to_vec()
    };
    // Benches run by hand into the same directory are reported too.
    let mut others = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(bench) = name.strip_suffix(".json")
                && bench != "summary"
                && !expected.iter().any(|e| e == bench)
            {
                others.insert(bench.to_owned());
            }
        }
    }
    expected.extend(others);

    let mut rows = Vec::new();
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for bench in &expected {
        let path = dir.join(format!("{bench}.json"));
        if !path.exists() {
            missing.push((bench.clone(), "it failed or did not run".to_owned()));
            continue;
        }
        match bench_rows(&path) {
            Ok(figures) => {
                present.push(bench.clone());
                rows.extend(figures);
            }
            Err(error) => missing.push((bench.clone(), format!("{error:#}"))),
        }
    }
    let unmet = rows.iter().filter(|r| r["met"] == false).count();
    let met = rows.iter().filter(|r| r["met"] == true).count();
    let reported = rows.len() - met - unmet;

    println!();
    println!("make bench: {}", dir.display());
    print!("{}", report::table(&rows, true));
    for (bench, why) in &missing {
        println!("  {bench}: NO RESULTS ({why})");
    }
    println!(
        "{} figures: {met} met, {unmet} NOT met, {reported} reported only; {} of {} benches wrote results",
        rows.len(),
        present.len(),
        expected.len()
    );

    let summary = json!({
        "dir": dir.display().to_string(),
        "run": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "benches": present,
        "missing": missing.iter().map(|(bench, _)| bench).collect::<Vec<_>>(),
        "met": met,
        "unmet": unmet,
        "figures": rows,
    });
    let text = serde_json::to_string_pretty(&summary)? + "\n";
    std::fs::create_dir_all(dir)?;
    let path = dir.join("summary.json");
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let latest = PathBuf::from(LATEST);
    if let Some(parent) = latest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&latest, &text).with_context(|| format!("cannot write {LATEST}"))?;
    println!("written to {} and {LATEST}", path.display());
    Ok(if unmet > 0 || !missing.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The rows of a summary, a bench's JSON or a run's directory.
fn load(path: &Path) -> anyhow::Result<Vec<Value>> {
    if !path.is_dir() {
        return bench_rows(path);
    }
    let summary = path.join("summary.json");
    if summary.exists() {
        return bench_rows(&summary);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        rows.extend(bench_rows(&file)?);
    }
    Ok(rows)
}

fn key(row: &Value) -> (String, String) {
    (
        row["bench"].as_str().unwrap_or("?").to_owned(),
        row["measure"].as_str().unwrap_or("?").to_owned(),
    )
}

fn compare(before: &Path, after: &Path) -> anyhow::Result<()> {
    let (old, new) = (load(before)?, load(after)?);
    // The after run's order, then what only the before run had.
    let mut keys: Vec<(String, String)> = new.iter().map(key).collect();
    for row in &old {
        if !keys.contains(&key(row)) {
            keys.push(key(row));
        }
    }
    let find = |rows: &[Value], wanted: &(String, String)| -> Option<Value> {
        rows.iter().find(|r| key(r) == *wanted).cloned()
    };
    let dash = || "—".to_owned();
    let cells: Vec<Vec<String>> = keys
        .iter()
        .map(|wanted| {
            let (a, b) = (find(&old, wanted), find(&new, wanted));
            let figure = |row: &Option<Value>| {
                row.as_ref()
                    .map_or_else(dash, |r| report::with_unit(r, "figure"))
            };
            let ratio = |row: &Option<Value>| row.as_ref().map_or_else(dash, report::ratio_text);
            let met =
                |row: &Option<Value>| row.as_ref().map_or("—", |r| report::met_text(&r["met"]));
            let change = match (&a, &b) {
                (Some(a), Some(b)) => {
                    let (x, y) = (report::field(a, "figure"), report::field(b, "figure"));
                    if x.is_finite() && y.is_finite() && x != 0.0 {
                        format!("{:.3}", y / x)
                    } else {
                        dash()
                    }
                }
                _ => dash(),
            };
            let target = b
                .as_ref()
                .or(a.as_ref())
                .map_or_else(dash, report::target_text);
            vec![
                wanted.0.clone(),
                wanted.1.clone(),
                figure(&a),
                figure(&b),
                change,
                ratio(&a),
                ratio(&b),
                target,
                format!("{} → {}", met(&a), met(&b)),
            ]
        })
        .collect();
    println!("before: {}", before.display());
    println!("after:  {}", after.display());
    print!(
        "{}",
        report::columns(
            &[
                "bench",
                "measure",
                "before",
                "after",
                "after/before",
                "ratio before",
                "ratio after",
                "target",
                "met",
            ],
            &cells,
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::report::{Figure, Target, table, target_text};

    #[test]
    fn a_row_is_judged_on_its_ratio_or_on_itself() {
        let compared = Figure::compared("push", "s", 3.0, 2.0, Target::AtMost(1.2));
        assert_eq!(compared.met(), Some(false));
        let row = compared.json("push-bench");
        assert_eq!(row["ratio"], 1.5);
        assert_eq!(target_text(&row), "<= 1.2×");
        let hold = Figure::value("hold", "ms", 120.0, Target::AtMost(150.0)).beside(400.0);
        assert_eq!(hold.met(), Some(true));
        assert_eq!(target_text(&hold.json("deploy-bench")), "<= 150 ms");
        let failed = Figure::failed("hold", "ms", Target::AtMost(150.0));
        assert_eq!(failed.met(), Some(false));
        assert!(failed.json("deploy-bench")["figure"].is_null());
        let reported = Figure::value("pause", "ms", 12.0, Target::None);
        assert_eq!(reported.met(), None);
        let text = table(&[reported.json("activate-bench")], true);
        assert!(text.contains("activate-bench | pause"), "{text}");
    }
}
