//! One result format for every bench (issue 27): each figure is a row of
//! bench, measure, unit, figure, baseline, ratio, target, met and runs.
//! A bench collects its rows in a [`Report`]; [`Report::finish`] prints them
//! and writes `$LW_BENCH_DIR/<bench>.json` (default `target/bench/manual`),
//! which `bench-report` gathers into one table at the end of `make bench`.
//!
//! Rows are compared between runs by bench and measure, so a measure's name
//! says what is measured and nothing that changes from run to run (counts
//! and details go in the bench's own printed lines).
// Each binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

/// Where a bench writes its JSON when `LW_BENCH_DIR` is not set.
pub(crate) const DEFAULT_DIR: &str = "target/bench/manual";

/// What a figure must be to be met.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Reported only.
    None,
}

impl Target {
    /// Whether `value` meets it (`None`: nothing to meet). NaN (a figure
    /// that could not be measured) meets no target.
    pub(crate) fn met(self, value: f64) -> Option<bool> {
        match self {
            Target::AtMost(limit) => Some(value <= limit),
            Target::AtLeast(limit) => Some(value >= limit),
            Target::None => None,
        }
    }
}

/// One row.
#[derive(Clone, Debug)]
pub(crate) struct Figure {
    pub(crate) measure: String,
    pub(crate) unit: &'static str,
    pub(crate) figure: f64,
    pub(crate) baseline: Option<f64>,
    pub(crate) target: Target,
    /// Whether the target applies to figure / baseline (else to the figure).
    pub(crate) on_ratio: bool,
    /// Each run's figure, in the figure's unit.
    pub(crate) runs: Vec<f64>,
}

impl Figure {
    /// `figure` against `baseline` measured in the same run, judged on
    /// their ratio.
    pub(crate) fn compared(
        measure: &str,
        unit: &'static str,
        figure: f64,
        baseline: f64,
        target: Target,
    ) -> Figure {
        Figure {
            measure: measure.to_owned(),
            unit,
            figure,
            baseline: Some(baseline),
            target,
            on_ratio: true,
            runs: Vec::new(),
        }
    }

    /// The medians of two sets of timed runs (seconds), judged on their
    /// ratio; the runs are `ours`.
    pub(crate) fn timed(
        measure: &str,
        ours: &[Duration],
        baseline: &[Duration],
        target: Target,
    ) -> Figure {
        Figure::compared(
            measure,
            "s",
            median_secs(ours),
            median_secs(baseline),
            target,
        )
        .runs(ours.iter().map(Duration::as_secs_f64))
    }

    /// An absolute figure (a hold in ms, a count of failures), judged on
    /// itself.
    pub(crate) fn value(measure: &str, unit: &'static str, value: f64, target: Target) -> Figure {
        Figure {
            measure: measure.to_owned(),
            unit,
            figure: value,
            baseline: None,
            target,
            on_ratio: false,
            runs: Vec::new(),
        }
    }

    /// A figure that could not be measured: it meets no target.
    pub(crate) fn failed(measure: &str, unit: &'static str, target: Target) -> Figure {
        Figure::value(measure, unit, f64::NAN, target)
    }

    /// Shows `baseline` beside an absolute figure (the target stays on the
    /// figure).
    pub(crate) fn beside(mut self, baseline: f64) -> Figure {
        self.baseline = Some(baseline);
        self
    }

    pub(crate) fn runs(mut self, runs: impl IntoIterator<Item = f64>) -> Figure {
        self.runs = runs.into_iter().collect();
        self
    }

    pub(crate) fn ratio(&self) -> Option<f64> {
        self.baseline.map(|baseline| self.figure / baseline)
    }

    pub(crate) fn met(&self) -> Option<bool> {
        let judged = if self.on_ratio {
            self.ratio().unwrap_or(f64::NAN)
        } else {
            self.figure
        };
        self.target.met(judged)
    }

    pub(crate) fn json(&self, bench: &str) -> Value {
        let target = match self.target {
            Target::AtMost(limit) => json!({"op": "<=", "value": limit, "on": self.on()}),
            Target::AtLeast(limit) => json!({"op": ">=", "value": limit, "on": self.on()}),
            Target::None => Value::Null,
        };
        json!({
            "bench": bench,
            "measure": self.measure,
            "unit": self.unit,
            "figure": self.figure,
            "baseline": self.baseline,
            "ratio": self.ratio(),
            "target": target,
            "met": self.met(),
            "runs": self.runs,
        })
    }

    fn on(&self) -> &'static str {
        if self.on_ratio { "ratio" } else { "figure" }
    }
}

/// The rows of one bench binary.
#[derive(Debug)]
pub(crate) struct Report {
    bench: &'static str,
    figures: Vec<Figure>,
}

impl Report {
    /// `bench` names the binary (`push-bench`); its JSON is `<bench>.json`.
    pub(crate) fn new(bench: &'static str) -> Report {
        Report {
            bench,
            figures: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    /// Prints the rows and writes `$LW_BENCH_DIR/<bench>.json`.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        let dir = std::env::var_os("LW_BENCH_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
        let rows: Vec<Value> = self.figures.iter().map(|f| f.json(self.bench)).collect();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.bench));
        let document = json!({"bench": self.bench, "figures": rows});
        std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        print!("{}", table(&rows, false));
        println!("({} rows written to {})", rows.len(), path.display());
        Ok(())
    }
}

/// The median of `times` in seconds (NaN when there are none).
pub(crate) fn median_secs(times: &[Duration]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len() / 2)
        .map_or(f64::NAN, Duration::as_secs_f64)
}

/// A number as the table shows it: fewer decimals the larger it is.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let size = value.abs();
    if size >= 1000.0 || (value.fract() == 0.0 && size < 1e15) {
        format!("{value:.0}")
    } else if size >= 100.0 {
        format!("{value:.1}")
    } else if size >= 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A row's field as a number (JSON null, a figure that was NaN, is NaN).
pub(crate) fn field(row: &Value, name: &str) -> f64 {
    row[name].as_f64().unwrap_or(f64::NAN)
}

/// A value with its unit (`3.668 s`), or `—` when absent.
pub(crate) fn with_unit(row: &Value, name: &str) -> String {
    if row[name].is_null() && name != "figure" {
        return "—".to_owned();
    }
    let unit = row["unit"].as_str().unwrap_or("");
    let value = number(field(row, name));
    if unit.is_empty() || !field(row, name).is_finite() {
        value
    } else {
        format!("{value} {unit}")
    }
}

pub(crate) fn ratio_text(row: &Value) -> String {
    row["ratio"]
        .as_f64()
        .map_or_else(|| "—".to_owned(), |r| format!("{r:.3}"))
}

/// `<= 1.2×` (on the ratio) or `<= 150 ms` (on the figure), `—` for none.
pub(crate) fn target_text(row: &Value) -> String {
    let target = &row["target"];
    let (Some(op), Some(value)) = (target["op"].as_str(), target["value"].as_f64()) else {
        return "—".to_owned();
    };
    if target["on"] == "ratio" {
        format!("{op} {}×", short(value))
    } else {
        let unit = row["unit"].as_str().unwrap_or("");
        format!("{op} {} {unit}", short(value))
            .trim_end()
            .to_owned()
    }
}

/// [`number`] without trailing zeros (`1.2`, `150`).
fn short(value: f64) -> String {
    let text = number(value);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

pub(crate) fn met_text(met: &Value) -> &'static str {
    match met.as_bool() {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "—",
    }
}

/// Lines of columns padded to their widest cell.
pub(crate) fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| {
                let pad = width.saturating_sub(cell.chars().count());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        format!("  {}\n", padded.join(" | ").trim_end())
    };
    let mut text = line(header.iter().map(|h| (*h).to_owned()).collect());
    text += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        text += &line(row.clone());
    }
    text
}

/// The rows as a table: `bench | measure | figure | baseline | ratio |
/// target | met` (without the bench column when `with_bench` is false).
pub(crate) fn table(rows: &[Value], with_bench: bool) -> String {
    let mut header = vec!["measure", "figure", "baseline", "ratio", "target", "met"];
    if with_bench {
        header.insert(0, "bench");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row["measure"].as_str().unwrap_or("?").to_owned(),
                with_unit(row, "figure"),
                with_unit(row, "baseline"),
                ratio_text(row),
                target_text(row),
                met_text(&row["met"]).to_owned(),
            ];
            if with_bench {
                cells.insert(0, row["bench"].as_str().unwrap_or("?").to_owned());
            }
            cells
        })
        .collect();
    columns(&header, &cells)
}
