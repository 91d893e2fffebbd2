//! Attached execs: stdin fed from this side reaches the process and ends
//! when the sender goes; output comes back byte for byte.

use std::time::Duration;

use launchway_containerd::{AppLabels, ExecControl, OutputChunk, OutputStream, PtySize, StepSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{BUSYBOX, Ns, hex_id};

async fn attached(ns: &Ns, id: &str, script: &str, input: Vec<Vec<u8>>) -> (u32, Vec<u8>, Vec<u8>) {
    let (stdin, stdin_receiver) = mpsc::channel(4);
    let (output, mut output_receiver) = mpsc::channel::<OutputChunk>(4);
    let feed = tokio::spawn(async move {
        for chunk in input {
            if stdin.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut step = StepSpec::new(["sh", "-c", script]);
    step.timeout = Some(Duration::from_secs(30));
    let cancel = CancellationToken::new();
    let run = ns
        .engine
        .exec_attached(id, &step, stdin_receiver, output, &cancel);
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = output_receiver.recv().await {
            match chunk.stream {
                OutputStream::Stdout => out.extend(chunk.bytes),
                OutputStream::Stderr => err.extend(chunk.bytes),
            }
        }
        (out, err)
    };
    let (outcome, (out, err)) = tokio::join!(run, collect);
    feed.abort();
    (outcome.expect("the exec runs").exit_code, out, err)
}

#[tokio::test]
async fn stdin_reaches_the_process_and_its_end_ends_the_input() {
    let ns = Ns::new().await;
    let id = format!("attached-{}", hex_id());
    let labels = AppLabels {
        owner: "test/attached".into(),
        ..Default::default()
    };
    ns.engine
        .create_app(&id, BUSYBOX, &StepSpec::new(["sleep", "3600"]), &labels)
        .await
        .expect("create");
    let log = tempfile::NamedTempFile::new().unwrap();
    ns.engine.start_app(&id, log.path()).await.expect("start");

    let (code, out, err) = attached(
        &ns,
        &id,
        "cat; echo done >&2",
        vec![b"hello ".to_vec(), b"world\n".to_vec()],
    )
    .await;
    assert_eq!(
        (code, out.as_slice(), err.as_slice()),
        (0, &b"hello world\n"[..], &b"done\n"[..])
    );

    // Megabytes through, in many chunks, counted on the other side.
    let chunk = vec![b'x'; 64 * 1024];
    let (code, out, _) = attached(&ns, &id, "wc -c", vec![chunk; 48]).await;
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        (48 * 64 * 1024).to_string()
    );

    // No input at all: the process sees its end at once.
    let (code, out, _) = attached(&ns, &id, "cat; echo eof", Vec::new()).await;
    assert_eq!((code, out.as_slice()), (0, &b"eof\n"[..]));

    // A process that ends without reading its input does not hang the exec.
    let chunk = vec![b'y'; 64 * 1024];
    let (code, _, _) = attached(&ns, &id, "exit 3", vec![chunk; 32]).await;
    assert_eq!(code, 3);

    ns.engine.remove_app(&id).await.expect("remove");
    ns.finish().await;
}

/// What the test sends an interactive exec.
enum ExecInput {
    Stdin(Vec<u8>),
    /// The end of stdin (its sender dropped).
    Eof,
    Control(ExecControl),
    /// The caller gives up (its cancellation token).
    Cancel,
}

/// Runs `script` interactively in `id`, sending each input once the output
/// holds its marker (`""`: at once), and returns how it ended and
/// everything it printed.
async fn interactive(
    ns: &Ns,
    id: &str,
    script: &str,
    tty: Option<PtySize>,
    inputs: Vec<(&'static str, ExecInput)>,
) -> (
    Result<launchway_containerd::StepOutcome, launchway_containerd::EngineError>,
    String,
) {
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (stdin, stdin_receiver) = mpsc::channel(8);
    let (control, control_receiver) = mpsc::channel(8);
    let (output, mut output_receiver) = mpsc::channel::<OutputChunk>(8);
    let mut step = StepSpec::new(["sh", "-c", script]);
    step.timeout = Some(Duration::from_secs(30));
    step.env = vec![("OWN".into(), "exec".into())];
    let cancel = CancellationToken::new();
    let seen = printed.clone();
    let canceller = cancel.clone();
    let feed = tokio::spawn(async move {
        let mut stdin = Some(stdin);
        for (marker, message) in inputs {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !seen.lock().unwrap().contains(marker) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            match message {
                ExecInput::Stdin(bytes) => {
                    if let Some(stdin) = &stdin {
                        let _ = stdin.send(bytes).await;
                    }
                }
                ExecInput::Eof => stdin = None,
                ExecInput::Control(message) => {
                    let _ = control.send(message).await;
                }
                ExecInput::Cancel => canceller.cancel(),
            }
        }
        // Holds the input open until the process ends (as a client would).
        std::future::pending::<()>().await;
    });
    let run = ns.engine.exec_interactive(
        id,
        &step,
        tty,
        stdin_receiver,
        control_receiver,
        output,
        &cancel,
    );
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = output_receiver.recv().await {
            all.extend(chunk.bytes);
            *printed.lock().unwrap() = String::from_utf8_lossy(&all).into_owned();
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    let (outcome, text) = tokio::join!(run, collect);
    feed.abort();
    (outcome, text)
}

#[tokio::test]
async fn interactive_execs_get_a_terminal_the_container_env_resizes_and_signals() {
    let ns = Ns::new().await;
    let id = format!("interactive-{}", hex_id());
    let labels = AppLabels {
        owner: "test/interactive".into(),
        ..Default::default()
    };
    let mut app = StepSpec::new(["sleep", "3600"]);
    app.env = vec![("FROM_DEPLOY".into(), "deployed".into())];
    ns.engine
        .create_app(&id, BUSYBOX, &app, &labels)
        .await
        .expect("create");
    let log = tempfile::NamedTempFile::new().unwrap();
    ns.engine.start_app(&id, log.path()).await.expect("start");

    // A terminal of the asked size, resized; the container's variables
    // under the exec's own; typed input echoed by the terminal.
    let (outcome, text) = interactive(
        &ns,
        &id,
        concat!(
            "[ -t 0 ] && echo tty; stty size; echo \"$FROM_DEPLOY/$OWN\"; echo ready; i=0; ",
            "while [ \"$(stty size)\" != '50 100' ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; ",
            "stty size | sed s/^/now:/; read line; echo \"got:$line\""
        ),
        Some(PtySize { cols: 80, rows: 24 }),
        vec![
            (
                "ready",
                ExecInput::Control(ExecControl::Resize(PtySize {
                    cols: 100,
                    rows: 50,
                })),
            ),
            ("now:", ExecInput::Stdin(b"hello\r".to_vec())),
        ],
    )
    .await;
    let outcome = outcome.expect("the exec runs");
    assert_eq!(outcome.exit_code, 0, "{text}");
    for expected in ["tty", "24 80", "deployed/exec", "now:50 100", "got:hello"] {
        assert!(text.contains(expected), "`{expected}` missing in {text:?}");
    }

    // Ctrl-C typed on the terminal interrupts the foreground command,
    // not the shell that traps it.
    let (outcome, text) = interactive(
        &ns,
        &id,
        "trap 'echo interrupted' INT; echo ready; sleep 20; echo after",
        Some(PtySize { cols: 80, rows: 24 }),
        vec![("ready", ExecInput::Stdin(vec![0x03]))],
    )
    .await;
    let outcome = outcome.expect("the exec runs");
    assert!(!outcome.timed_out, "{text}");
    assert!(
        text.contains("interrupted") && text.contains("after"),
        "{text:?}"
    );

    // Without a terminal: two streams, a signal sent by number ends it.
    let (outcome, _) = interactive(
        &ns,
        &id,
        "exec sleep 20",
        None,
        vec![("", ExecInput::Control(ExecControl::Signal(15)))],
    )
    .await;
    let outcome = outcome.expect("the exec runs");
    assert!(!outcome.timed_out);
    assert_eq!(outcome.exit_code, 128 + 15);

    // The end of input ends a command reading it.
    let (outcome, text) = interactive(
        &ns,
        &id,
        "cat; echo end",
        None,
        vec![
            ("", ExecInput::Stdin(b"abc\n".to_vec())),
            ("", ExecInput::Eof),
        ],
    )
    .await;
    let outcome = outcome.expect("the exec runs");
    assert_eq!((outcome.exit_code, text.as_str()), (0, "abc\nend\n"));

    // A signal and a cancelled caller reach the command a shell runs, not
    // only the shell: nothing is left running after either.
    let left = async |ns: &Ns| {
        let (_, text) = interactive(
            ns,
            &id,
            "grep -l 'sleep.30[01]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l",
            None,
            vec![],
        )
        .await;
        text.trim().to_owned()
    };
    let (outcome, _) = interactive(
        &ns,
        &id,
        "echo started; sleep 300; echo not-reached",
        None,
        vec![("started", ExecInput::Control(ExecControl::Signal(15)))],
    )
    .await;
    assert_eq!(outcome.expect("the exec runs").exit_code, 128 + 15);
    assert_eq!(left(&ns).await, "0");
    let (outcome, _) = interactive(
        &ns,
        &id,
        "echo started; sleep 301; echo not-reached",
        None,
        vec![("started", ExecInput::Cancel)],
    )
    .await;
    assert!(
        matches!(outcome, Err(launchway_containerd::EngineError::Cancelled)),
        "{outcome:?}"
    );
    assert_eq!(left(&ns).await, "0");

    ns.engine.remove_app(&id).await.expect("remove");
    ns.finish().await;
}
