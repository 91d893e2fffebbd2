//! `make soak` (issue 25): does the daemon stay flat over many pushes?
//!
//! One daemon (the release build under `make soak`), one project `soak`
//! with a tiny busybox app (`python:3.11` is the busybox runtime fixture)
//! whose `source.root` is `web/`, and `SOAK_IDLE_PROJECTS` (default 15) idle
//! projects beside it (one push each of a branch that is not the default
//! one, so stored and not deployed: other projects' records in the store).
//! Then `SOAK_PUSHES` pushes (default 1000), each a commit that only
//! changes `README.md`, outside `source.root`: the build is reused and
//! deployed again; `git push` over SSH returns once the deploy is done, and
//! the router must serve the app after it.
//!
//! Every `SOAK_EVERY` pushes (default 100) one row: the window's median and
//! slowest push, the daemon's VmRSS and open descriptors, the on-disk size
//! (as `du -x`) of `<data>/state` (sled), of the whole data dir and of
//! `<data>/repos`, and the median of 5 runs each of `launchway releases -p
//! soak`, `builds -p soak`, `activities -p soak` and `releases -p idle00`
//! (the CLI over the admin socket, process start included: what an operator
//! waits for), and how many releases, builds and activities `soak` lists
//! (what retention bounds; sled's files may lag behind it).
//!
//! At the end: least-squares slopes over the windows after warm-up (the
//! pushes after the 200th, or the second half of fewer than 400), a verdict
//! per figure and the ratio of the last window to the first window after
//! warm-up (the baseline, measured in the same run).
//!
//! Daemon settings: `SOAK_SETTINGS`, TOML sections appended to the settings
//! file the bench writes (see [`EXTRA_SETTINGS`]); both are printed.
//!
//! Usage: `soak-bench LAUNCHWAY_BINARY` (root; containerd from
//! `LAUNCHWAY_CONTAINERD_SOCKET`; `SOAK_PUSHES`, `SOAK_EVERY`,
//! `SOAK_IDLE_PROJECTS`, `SOAK_SETTINGS` from the environment).
// `disallowed_methods`: common.rs's waits poll with a short sleep.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, git, median, run};

/// Settings sections appended to the daemon's settings file when
/// `SOAK_SETTINGS` is not set (whole sections only: they come after the
/// bench's `[deploy]` and `[containerd]`).
//
// ==== RETENTION SETTINGS GO HERE ====
// Empty by default: the daemon's own defaults apply (and a daemon without
// a `[retention]` section refuses one, as it refuses any unknown key). To
// soak with retention (issue 25), put it here, for example
//   "[retention]\nreleases_per_environment = 20\nactivities_days = 0\ninterval_secs = 60\n"
// or pass the same text in SOAK_SETTINGS for one run:
//   SOAK_SETTINGS=$'[retention]\nreleases_per_environment = 20\n' make soak
const EXTRA_SETTINGS: &str = "";

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    web:
      commands:
        start: httpd -f -p 127.0.0.1:$PORT -h /app
"#;

const PROJECT: &str = "soak";
const HOST: &str = "main.soak.localhost";
/// Runs of each listing per window (the median is kept).
const LISTING_RUNS: usize = 5;
/// Pushes left out of the fit (when there are at least twice as many).
const WARM_UP: usize = 200;
/// A figure is flat when its fitted change over the fit's span is under
/// this fraction of its mean over the fit.
const NOISE: f64 = 0.10;

struct Options {
    pushes: usize,
    every: usize,
    idle_projects: usize,
    settings: String,
}

impl Options {
    fn from_env() -> anyhow::Result<Options> {
        let pushes = env_usize("SOAK_PUSHES", 1000)?;
        // More than the pushes: one window of them all.
        let every = env_usize("SOAK_EVERY", 100)?.min(pushes);
        let idle_projects = env_usize("SOAK_IDLE_PROJECTS", 15)?;
        if every == 0 {
            bail!("SOAK_PUSHES and SOAK_EVERY must be at least 1");
        }
        let settings = match std::env::var("SOAK_SETTINGS") {
            Ok(text) => text,
            Err(std::env::VarError::NotPresent) => EXTRA_SETTINGS.to_owned(),
            Err(error) => return Err(error).context("SOAK_SETTINGS"),
        };
        let settings = if settings.is_empty() || settings.ends_with('\n') {
            settings
        } else {
            settings + "\n"
        };
        Ok(Options {
            pushes,
            every,
            idle_projects,
            settings,
        })
    }

    /// Pushes left out of the fit.
    fn warm_up(&self) -> usize {
        if self.pushes >= 2 * WARM_UP {
            WARM_UP
        } else {
            self.pushes / 2
        }
    }
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a count")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(error) => Err(error).context(name.to_owned()),
    }
}

/// What one window recorded (at its last push).
struct Window {
    /// Pushes done so far.
    pushes: usize,
    push_median: Option<Duration>,
    push_max: Option<Duration>,
    rss_bytes: u64,
    fds: usize,
    state_bytes: u64,
    data_bytes: u64,
    repos_bytes: u64,
    releases: Duration,
    builds: Duration,
    activities: Duration,
    idle_releases: Option<Duration>,
    /// Records of the project listed (all pages): releases, builds,
    /// activities; what retention is to bound, whatever sled's files do.
    kept: [usize; 3],
}

fn main() -> anyhow::Result<()> {
    let usage = "usage: soak-bench LAUNCHWAY_BINARY (SOAK_PUSHES, SOAK_EVERY, SOAK_IDLE_PROJECTS and SOAK_SETTINGS from the environment)";
    let launchway = PathBuf::from(std::env::args().nth(1).context(usage)?);
    let options = Options::from_env()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "soak", "-f"])
        .arg(&key))?;
    let mut server =
        LaunchwayServer::start_with_settings(&launchway, root, &key, &options.settings)?;
    let result = soak(&server, root, &options);
    server.stop();
    result
}

fn soak(server: &LaunchwayServer, root: &Path, options: &Options) -> anyhow::Result<()> {
    println!(
        "soak: {} pushes of a commit whose build is reused, a row every {}, {} idle projects beside it",
        options.pushes, options.every, options.idle_projects
    );
    println!(
        "daemon: {} (pid {}), data dir {}",
        server.binary().display(),
        server.pid(),
        server.data.display()
    );
    print_settings(server)?;

    server.use_busybox_runtime()?;
    let remote = server.project(PROJECT)?;
    let work = root.join("work");
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::create_dir_all(work.join("web"))?;
    std::fs::write(work.join(".upsun/config.yaml"), APP)?;
    std::fs::write(work.join("web/index.html"), "soak\n")?;
    std::fs::write(work.join("README.md"), "soak 0\n")?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "soak 0"]))?;
    let first = common::push(&work, &remote, &server.ssh_command)?;
    wait_serving(server)?;
    println!(
        "first push (cold build, deploy): {:.3} s",
        first.as_secs_f64()
    );
    let plan = build_keys(server)?;

    let idle: Vec<String> = (0..options.idle_projects)
        .map(|i| format!("idle{i:02}"))
        .collect();
    for name in &idle {
        // A branch that is not the default one: an inactive environment,
        // stored, not built or deployed (no containers to keep up).
        let remote = server.project(name)?;
        run(git(&work)
            .env("GIT_SSH_COMMAND", &server.ssh_command)
            .args(["push", "-q", &remote, "main:refs/heads/stored"]))
        .with_context(|| format!("the push to {name}"))?;
    }

    println!(
        "windows: push times are this window's; memory and sizes at its last push; listings: median of {LISTING_RUNS} CLI runs"
    );
    let header = format!(
        "{:>6} {:>9} {:>9} {:>10} {:>5} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9}  {}",
        "pushes",
        "push ms",
        "max ms",
        "rss KiB",
        "fds",
        "state KiB",
        "data KiB",
        "repos KiB",
        "rel ms",
        "builds ms",
        "act ms",
        "idle ms",
        "kept rel/bld/act",
    );
    println!("{header}");
    let mut windows = Vec::new();
    let setup = record(server, idle.first(), 0, &mut [])?;
    print_row(&setup);
    windows.push(setup);

    let mut times = Vec::with_capacity(options.every);
    for index in 1..=options.pushes {
        std::fs::write(work.join("README.md"), format!("soak {index}\n"))?;
        run(git(&work).args(["commit", "-q", "-am", &format!("soak {index}")]))?;
        let elapsed = common::push(&work, &remote, &server.ssh_command)
            .with_context(|| format!("push {index}"))?;
        wait_serving(server).with_context(|| format!("after push {index}"))?;
        times.push(elapsed);
        if index % options.every == 0 || index == options.pushes {
            let window = record(server, idle.first(), index, &mut times)?;
            print_row(&window);
            windows.push(window);
            times.clear();
        }
    }
    let plan_after = build_keys(server)?;
    if plan_after != plan {
        println!(
            "WARNING: the build key changed during the soak (builds were not reused):\n{plan}\n{plan_after}"
        );
    }
    print_slopes(&windows, options);
    Ok(())
}

/// The apps' rows of `launchway plan soak main` (tree and build key; the
/// commit line left out): the same before and after the soak when every
/// build was reused.
fn build_keys(server: &LaunchwayServer) -> anyhow::Result<String> {
    let plan = server.cli(&["plan", PROJECT, "main"])?;
    Ok(plan
        .lines()
        .filter(|line| !line.starts_with("commit "))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The settings file the daemon runs with, then what it makes of it.
fn print_settings(server: &LaunchwayServer) -> anyhow::Result<()> {
    let file = std::fs::read_to_string(server.settings())?;
    println!("settings file {}:", server.settings().display());
    for line in file.lines() {
        println!("  {line}");
    }
    let shown = server.cli(&["settings", "show"])?;
    println!("settings in effect (`launchway settings show`):");
    for line in shown.lines() {
        println!("  {line}");
    }
    Ok(())
}

/// Measures the daemon after `pushes` pushes, `times` being the window's.
fn record(
    server: &LaunchwayServer,
    idle: Option<&String>,
    pushes: usize,
    times: &mut [Duration],
) -> anyhow::Result<Window> {
    let (push_median, push_max) = if times.is_empty() {
        (None, None)
    } else {
        let max = times.iter().max().copied();
        (Some(median(times)), max)
    };
    let rss_bytes = server.rss_kib() * 1024;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map(|entries| entries.count())
        .unwrap_or(0);
    let data = &server.data;
    let window = Window {
        pushes,
        push_median,
        push_max,
        rss_bytes,
        fds,
        state_bytes: disk_usage(&data.join("state")),
        data_bytes: disk_usage(data),
        repos_bytes: disk_usage(&data.join("repos")),
        releases: listing(server, &["releases", "-p", PROJECT])?,
        builds: listing(server, &["builds", "-p", PROJECT])?,
        activities: listing(server, &["activities", "-p", PROJECT])?,
        idle_releases: match idle {
            Some(name) => Some(listing(server, &["releases", "-p", name])?),
            None => None,
        },
        kept: [
            records(server, "releases")?,
            records(server, "builds")?,
            records(server, "activities")?,
        ],
    };
    Ok(window)
}

/// The median wall time of [`LISTING_RUNS`] runs of the CLI with `args`.
fn listing(server: &LaunchwayServer, args: &[&str]) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(LISTING_RUNS);
    for _ in 0..LISTING_RUNS {
        let started = Instant::now();
        let out = server
            .cli_command(args)
            .output()
            .with_context(|| format!("cannot run launchway {args:?}"))?;
        times.push(started.elapsed());
        if !out.status.success() {
            bail!(
                "launchway {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(median(&mut times))
}

/// How many records `launchway LIST -p soak` has, all of them on one page.
fn records(server: &LaunchwayServer, list: &str) -> anyhow::Result<usize> {
    let table = server.cli(&[list, "-p", PROJECT, "--limit", "1000000"])?;
    // A header line, then one line a record.
    Ok(table
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count()
        .saturating_sub(1))
}

/// Waits until the router serves the app's page.
fn wait_serving(server: &LaunchwayServer) -> anyhow::Result<()> {
    common::wait_for("the app", || {
        common::http_get(server.router, HOST, "/index.html").is_ok_and(|body| body == "soak\n")
    })
}

/// The bytes the files under `path` take on disk (as `du -x`: allocated
/// blocks, symbolic links not followed, other filesystems not entered);
/// files that vanish while it walks are skipped.
fn disk_usage(path: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let device = top.dev();
    let mut total = top.blocks() * 512;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_row(w: &Window) {
    let opt = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", ms(d)));
    println!(
        "{:>6} {:>9} {:>9} {:>10} {:>5} {:>11} {:>11} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9}  {}/{}/{}",
        w.pushes,
        opt(w.push_median),
        opt(w.push_max),
        w.rss_bytes / 1024,
        w.fds,
        w.state_bytes / 1024,
        w.data_bytes / 1024,
        w.repos_bytes / 1024,
        ms(w.releases),
        ms(w.builds),
        ms(w.activities),
        opt(w.idle_releases),
        w.kept[0],
        w.kept[1],
        w.kept[2],
    );
    let _ = std::io::stdout().flush();
}

/// A least-squares line through `points`: slope, its standard error (when
/// there are more than two points), and the mean of y.
struct Fit {
    slope: f64,
    stderr: Option<f64>,
    mean: f64,
    span: f64,
}

fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let stderr = (points.len() > 2).then(|| {
        let residuals: f64 = points
            .iter()
            .map(|p| (p.1 - intercept - slope * p.0).powi(2))
            .sum();
        (residuals / (n - 2.0) / sxx).sqrt()
    });
    let (low, high) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.0), h.max(p.0)));
    Some(Fit {
        slope,
        stderr,
        mean: mean_y,
        span: high - low,
    })
}

/// One figure the soak fits: its name, how to read it from a window (in
/// bytes or milliseconds), the unit its slope is shown in (per how many
/// pushes) and the goal.
struct Figure {
    name: &'static str,
    value: fn(&Window) -> Option<f64>,
    unit: &'static str,
    per: f64,
    goal: &'static str,
}

fn bytes(b: u64) -> Option<f64> {
    Some(b as f64)
}

fn figures() -> Vec<Figure> {
    vec![
        Figure {
            name: "daemon RSS",
            value: |w| bytes(w.rss_bytes),
            unit: "bytes/push",
            per: 1.0,
            goal: "flat",
        },
        Figure {
            name: "state size",
            value: |w| bytes(w.state_bytes),
            unit: "bytes/push",
            per: 1.0,
            goal: "bounded by retention",
        },
        Figure {
            name: "data dir size",
            value: |w| bytes(w.data_bytes),
            unit: "bytes/push",
            per: 1.0,
            goal: "bounded by retention",
        },
        Figure {
            name: "repos size",
            value: |w| bytes(w.repos_bytes),
            unit: "bytes/push",
            per: 1.0,
            goal: "git's own growth, packed",
        },
        Figure {
            name: "releases kept",
            value: |w| Some(w.kept[0] as f64),
            unit: "/100 pushes",
            per: 100.0,
            goal: "bounded by retention",
        },
        Figure {
            name: "builds kept",
            value: |w| Some(w.kept[1] as f64),
            unit: "/100 pushes",
            per: 100.0,
            goal: "bounded by retention",
        },
        Figure {
            name: "activities kept",
            value: |w| Some(w.kept[2] as f64),
            unit: "/100 pushes",
            per: 100.0,
            goal: "bounded by retention",
        },
        Figure {
            name: "open fds",
            value: |w| Some(w.fds as f64),
            unit: "fds/100 pushes",
            per: 100.0,
            goal: "flat",
        },
        Figure {
            name: "push time",
            value: |w| w.push_median.map(ms),
            unit: "ms/100 pushes",
            per: 100.0,
            goal: "flat",
        },
        Figure {
            name: "releases -p",
            value: |w| Some(ms(w.releases)),
            unit: "ms/100 pushes",
            per: 100.0,
            goal: "flat",
        },
        Figure {
            name: "builds -p",
            value: |w| Some(ms(w.builds)),
            unit: "ms/100 pushes",
            per: 100.0,
            goal: "flat",
        },
        Figure {
            name: "activities -p",
            value: |w| Some(ms(w.activities)),
            unit: "ms/100 pushes",
            per: 100.0,
            goal: "flat",
        },
        Figure {
            name: "releases -p idle",
            value: |w| w.idle_releases.map(ms),
            unit: "ms/100 pushes",
            per: 100.0,
            goal: "flat, though another project's history grows",
        },
    ]
}

fn print_slopes(windows: &[Window], options: &Options) {
    let warm_up = options.warm_up();
    let mut fitted: Vec<&Window> = windows.iter().filter(|w| w.pushes > warm_up).collect();
    if fitted.len() < 2 {
        // Too few windows after warm-up: fit the last two there are.
        fitted = windows.iter().rev().take(2).rev().collect();
    }
    let (Some(baseline), Some(last)) = (fitted.first(), fitted.last()) else {
        println!("no windows to fit");
        return;
    };
    println!(
        "slopes: least squares over the {} windows at pushes {}..={} (warm-up: the first {warm_up} pushes left out); baseline: the window at {} pushes",
        fitted.len(),
        baseline.pushes,
        last.pushes,
        baseline.pushes,
    );
    println!(
        "  rule: flat when |slope| x span ({} pushes) < {:.0}% of the figure's mean over the fit (change), else grows/shrinks; last/bl: last window / baseline",
        last.pushes - baseline.pushes,
        NOISE * 100.0
    );
    println!(
        "  {:<17} {:>14} {:>12} {:<14} {:>9} {:>8}  verdict",
        "figure", "slope", "+-stderr", "unit", "change", "last/bl"
    );
    for figure in figures() {
        let points: Vec<(f64, f64)> = fitted
            .iter()
            .filter_map(|w| (figure.value)(w).map(|y| (w.pushes as f64, y)))
            .collect();
        let Some(line) = fit(&points) else {
            println!("  {:<17} not enough points", figure.name);
            continue;
        };
        let change = line.slope * line.span;
        let relative = if line.mean.abs() > 0.0 {
            change / line.mean
        } else {
            0.0
        };
        let verdict = if relative.abs() < NOISE {
            "flat"
        } else if relative > 0.0 {
            "grows"
        } else {
            "shrinks"
        };
        // Said, not decided: a large change the windows scatter around.
        let scattered = match line.stderr {
            Some(e) if verdict != "flat" && line.slope.abs() < 2.0 * e => ", within 2 stderr of 0",
            _ => "",
        };
        let ratio = match ((figure.value)(baseline), (figure.value)(last)) {
            (Some(b), Some(l)) if b > 0.0 => format!("{:.3}", l / b),
            _ => "-".to_owned(),
        };
        let stderr = line
            .stderr
            .map_or("-".to_owned(), |e| format!("{:.1}", e * figure.per));
        println!(
            "  {:<17} {:>+14.1} {:>12} {:<14} {:>+8.1}% {:>8}  {verdict}{scattered} (goal: {})",
            figure.name,
            line.slope * figure.per,
            stderr,
            figure.unit,
            relative * 100.0,
            ratio,
            figure.goal,
        );
    }
    let _ = std::io::stdout().flush();
}
