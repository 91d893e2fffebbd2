//! Attached execs: stdin fed from this side reaches the process and ends
//! when the sender goes; output comes back byte for byte.

use std::time::Duration;

use launchway_containerd::{AppLabels, OutputChunk, OutputStream, StepSpec};
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
