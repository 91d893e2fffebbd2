use std::time::Duration;

use launchway_containerd::{Bind, EngineError, Network, Output, OutputStream, StepSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Ns, busybox, run_sh, sh, stdout_of};

#[tokio::test]
async fn output_arrives_per_stream_in_order_and_exit_codes_propagate() {
    let ns = Ns::new().await;
    let (outcome, lines) = run_sh(
        &ns.engine,
        busybox(),
        sh("for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'no newline'; exit 3"),
    )
    .await;
    assert_eq!(outcome.exit_code, 3);
    assert!(!outcome.success());
    assert_eq!(stdout_of(&lines), ["out1", "out2", "out3", "no newline"]);
    let stderr: Vec<_> = lines
        .iter()
        .filter(|l| l.stream == OutputStream::Stderr)
        .map(|l| l.line.as_str())
        .collect();
    assert_eq!(stderr, ["err1", "err2", "err3"]);
    let (outcome, _) = run_sh(&ns.engine, busybox(), sh("exit 0")).await;
    assert!(outcome.success());
    ns.finish().await;
}

#[tokio::test]
async fn output_is_delivered_while_the_step_runs() {
    // The step only ends once the host has seen its first line: if output
    // were delivered at the end, this would run into the timeout instead.
    let ns = Ns::new().await;
    let shared = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let mut step = sh("echo waiting; while [ ! -e /app/go ]; do sleep 0.05; done; echo done");
    step.binds.push(Bind {
        source: shared.path().to_path_buf(),
        target: "/app".into(),
        writable: true,
    });
    step.timeout = Some(Duration::from_secs(20));
    let (sender, mut receiver) = mpsc::channel::<launchway_containerd::OutputLine>(16);
    let go = shared.path().join("go");
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(line) = receiver.recv().await {
            if line.line == "waiting" {
                std::fs::write(&go, b"").expect("signal");
            }
            seen.push(line.line);
        }
        seen
    });
    let outcome = ns
        .engine
        .run_step(
            busybox(),
            &step,
            Output::Lines(sender),
            &CancellationToken::new(),
        )
        .await
        .expect("runs");
    assert!(
        !outcome.timed_out,
        "the first line did not arrive while the step ran"
    );
    assert!(outcome.success());
    assert_eq!(watcher.await.expect("watcher"), ["waiting", "done"]);
    ns.finish().await;
}

#[tokio::test]
async fn a_timeout_kills_with_137() {
    let ns = Ns::new().await;
    let mut step = sh("echo started; sleep 60");
    step.timeout = Some(Duration::from_millis(500));
    let (outcome, lines) = run_sh(&ns.engine, busybox(), step).await;
    assert!(outcome.timed_out);
    assert_eq!(outcome.exit_code, 137);
    assert!(
        outcome.describe().contains("time limit"),
        "{}",
        outcome.describe()
    );
    assert_eq!(stdout_of(&lines), ["started"]);
    ns.finish().await;
}

#[tokio::test]
async fn a_cancelled_step_leaves_nothing_behind() {
    let ns = Ns::new().await;
    let before = ns.engine.inventory().await.expect("inventory");
    let cancel = CancellationToken::new();
    let (sender, mut receiver) = mpsc::channel::<launchway_containerd::OutputLine>(16);
    let trigger = cancel.clone();
    tokio::spawn(async move {
        while let Some(line) = receiver.recv().await {
            if line.line == "started" {
                trigger.cancel();
            }
        }
    });
    let mut step = sh("echo started; sleep 60");
    step.timeout = Some(Duration::from_secs(30));
    let result = ns
        .engine
        .run_step(busybox(), &step, Output::Lines(sender), &cancel)
        .await;
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
    assert_eq!(ns.engine.inventory().await.expect("inventory"), before);
    ns.finish().await;
}

#[tokio::test]
async fn a_dropped_step_is_cleaned_up_in_the_background() {
    let ns = Ns::new().await;
    let before = ns.engine.inventory().await.expect("inventory");
    let step = sh("sleep 60");
    let cancel = CancellationToken::new();
    let running = ns
        .engine
        .run_step(busybox(), &step, Output::Discard, &cancel);
    // Drop it only once its task exists, so there is something to clean up.
    let engine = ns.engine.clone();
    let task_exists = async move {
        while engine.list_tasks().await.expect("tasks").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        outcome = running => panic!("the step ended on its own: {outcome:?}"),
        () = task_exists => {}
    }
    assert_ne!(ns.engine.inventory().await.expect("inventory"), before);
    let mut clean = false;
    for _ in 0..100 {
        if ns.engine.inventory().await.expect("inventory") == before {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(clean, "left behind: {:?}", ns.engine.inventory().await);
    ns.finish().await;
}

#[tokio::test]
async fn two_hundred_runs_leak_nothing() {
    let ns = Ns::new().await;
    let before = ns.engine.inventory().await.expect("inventory");
    let step = StepSpec::new(["/bin/true"]);
    for round in 0..50 {
        let runs = (0..4).map(|i| {
            let rootfs = launchway_containerd::Rootfs::Image {
                name: crate::BUSYBOX,
                writable: (round + i) % 2 == 0,
            };
            let engine = ns.engine.clone();
            let step = step.clone();
            async move {
                engine
                    .run_step(rootfs, &step, Output::Discard, &CancellationToken::new())
                    .await
            }
        });
        for outcome in futures_util::future::join_all(runs).await {
            assert!(outcome.expect("runs").success());
        }
    }
    assert_eq!(ns.engine.inventory().await.expect("inventory"), before);
    ns.finish().await;
}

#[tokio::test]
async fn network_none_has_only_loopback_and_cannot_reach_the_host() {
    let ns = Ns::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
    let (outcome, lines) = run_sh(
        &ns.engine,
        busybox(),
        sh(&format!(
            "ls /sys/class/net; if nc -w 2 127.0.0.1 {port} </dev/null; then echo connected; else echo refused; fi"
        )),
    )
    .await;
    assert!(outcome.success(), "{lines:?}");
    assert_eq!(stdout_of(&lines), ["lo", "refused"]);
    assert!(
        !accepted.is_finished(),
        "the host listener got a connection"
    );
    accepted.abort();

    // Host networking is the opposite: the host's listener is reachable.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
    let mut step = sh(&format!(
        "nc -w 2 127.0.0.1 {port} </dev/null && echo connected"
    ));
    step.network = Network::Host;
    let (_, lines) = run_sh(&ns.engine, busybox(), step).await;
    assert_eq!(stdout_of(&lines), ["connected"]);
    assert!(accepted.await.expect("accept task"));
    ns.finish().await;
}

#[tokio::test]
async fn read_only_rootfs_user_and_capabilities() {
    let ns = Ns::new().await;
    let (outcome, lines) = run_sh(
        &ns.engine,
        busybox(),
        sh("id -u; id -g; grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status; grep NoNewPrivs /proc/self/status; \
            grep Seccomp: /proc/self/status; touch /app/x 2>&1 || echo rootfs-read-only; touch /tmp/x && echo tmp-writable"),
    )
    .await;
    assert!(outcome.success(), "{lines:?}");
    let out = stdout_of(&lines);
    assert_eq!(out[0], "10000");
    assert_eq!(out[1], "10000");
    for cap in [
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
    ] {
        assert!(out.iter().any(|l| l == cap), "{cap} missing in {out:?}");
    }
    assert!(out.iter().any(|l| l == "NoNewPrivs:\t1"), "{out:?}");
    assert!(
        out.iter().any(|l| l == "Seccomp:\t2"),
        "seccomp filter not active: {out:?}"
    );
    assert!(
        out.iter().any(|l| l.contains("Read-only file system")),
        "{out:?}"
    );
    assert!(out.iter().any(|l| l == "rootfs-read-only"), "{out:?}");
    assert!(out.iter().any(|l| l == "tmp-writable"), "{out:?}");
    ns.finish().await;
}

#[tokio::test]
async fn a_memory_limit_is_enforced_and_reported() {
    let ns = Ns::new().await;
    let mut step = sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}");
    step.limits.memory_bytes = Some(32 * 1024 * 1024);
    step.timeout = Some(Duration::from_secs(60));
    let (outcome, lines) = run_sh(&ns.engine, busybox(), step).await;
    assert!(!outcome.success());
    assert!(outcome.out_of_memory, "{outcome:?} {lines:?}");
    assert!(
        outcome.describe().contains("memory limit"),
        "{}",
        outcome.describe()
    );
    assert!(!stdout_of(&lines).iter().any(|l| l.starts_with("survived")));
    ns.finish().await;
}

#[tokio::test]
async fn bad_specs_are_refused_before_anything_runs() {
    let ns = Ns::new().await;
    let before = ns.engine.inventory().await.expect("inventory");
    let mut step = sh("true");
    step.binds.push(Bind {
        source: "/tmp".into(),
        target: "/app/../etc".into(),
        writable: true,
    });
    let result = ns
        .engine
        .run_step(busybox(), &step, Output::Discard, &CancellationToken::new())
        .await;
    assert!(
        matches!(result, Err(EngineError::Invalid { .. })),
        "{result:?}"
    );
    let missing = launchway_containerd::Rootfs::Image {
        name: "no/such:image",
        writable: false,
    };
    let result = ns
        .engine
        .run_step(
            missing,
            &sh("true"),
            Output::Discard,
            &CancellationToken::new(),
        )
        .await;
    assert!(
        matches!(result, Err(EngineError::NotFound { .. })),
        "{result:?}"
    );
    assert_eq!(ns.engine.inventory().await.expect("inventory"), before);
    ns.finish().await;
}
