use std::collections::HashMap;

use launchway_containerd::{Capability, Rootfs, StepSpec};

use crate::{BUSYBOX, Ns, busybox, run_sh, sh, stdout_of};

fn as_root(script: &str) -> StepSpec {
    let mut step = sh(script);
    step.uid = 0;
    step.gid = 0;
    // Root without capabilities cannot write into web's /app.
    step.capabilities = vec![
        Capability::DacOverride,
        Capability::Fowner,
        Capability::Chown,
    ];
    step
}

#[tokio::test]
async fn freezing_keeps_written_and_deleted_files_and_annotations() {
    let ns = Ns::new().await;
    let before = ns.engine.inventory().await.expect("inventory");
    let workspace = ns.engine.workspace(BUSYBOX).await.expect("workspace");
    // Two steps on one workspace: the second sees the first's files.
    let (first, _) = run_sh(
        &ns.engine,
        Rootfs::Workspace(&workspace),
        as_root("echo hello > /app/greeting && mkdir -p /app/dir && echo nested > /app/dir/file && rm /bin/vi"),
    )
    .await;
    assert!(first.success());
    let (second, lines) = run_sh(
        &ns.engine,
        Rootfs::Workspace(&workspace),
        as_root("cat /app/greeting; rm /app/dir/file"),
    )
    .await;
    assert!(second.success());
    assert_eq!(stdout_of(&lines)[0], "hello");
    let annotations: HashMap<String, String> = [
        ("org.launchway.commit".to_string(), "0123abc".to_string()),
        ("org.launchway.tree".to_string(), "4567def".to_string()),
        ("org.launchway.build-key".to_string(), "k1".to_string()),
    ]
    .into();
    let frozen = workspace
        .freeze("test/frozen:1", annotations.clone())
        .await
        .expect("freeze");
    assert_eq!(frozen.diff_ids().len(), 2);
    assert_eq!(frozen.annotations(), annotations);

    let reread = ns
        .engine
        .image("test/frozen:1")
        .await
        .expect("image readable");
    assert_eq!(reread.digest(), frozen.digest());
    assert_eq!(reread.annotations(), annotations);
    let (outcome, lines) = run_sh(
        &ns.engine,
        Rootfs::Image { name: "test/frozen:1", writable: false },
        sh("cat /app/greeting; ls /app/dir; test -e /bin/vi && echo vi-present || echo vi-gone; test -e /app/dir/file && echo file-present || echo file-gone"),
    )
    .await;
    assert!(outcome.success(), "{lines:?}");
    assert_eq!(stdout_of(&lines), ["hello", "vi-gone", "file-gone"]);
    // The base image is untouched.
    let (_, lines) = run_sh(
        &ns.engine,
        busybox(),
        sh("test -e /bin/vi && echo vi-present; test -e /app/greeting || echo no-greeting"),
    )
    .await;
    assert_eq!(stdout_of(&lines), ["vi-present", "no-greeting"]);

    // Deleting the image frees its layer, config, manifest and snapshot at once.
    ns.engine
        .delete_image("test/frozen:1")
        .await
        .expect("delete");
    assert_eq!(ns.engine.inventory().await.expect("inventory"), before);
    ns.finish().await;
}

#[tokio::test]
async fn a_discarded_workspace_leaves_nothing() {
    let ns = Ns::new().await;
    let before = ns.engine.inventory().await.expect("inventory");
    let workspace = ns.engine.workspace(BUSYBOX).await.expect("workspace");
    let (outcome, _) = run_sh(
        &ns.engine,
        Rootfs::Workspace(&workspace),
        sh("echo x > /app/x"),
    )
    .await;
    assert!(outcome.success());
    workspace.discard().await.expect("discard");
    assert_eq!(ns.engine.inventory().await.expect("inventory"), before);
    ns.finish().await;
}

/// Two builds writing the same blob (the same source tree, say): the second
/// finds it present, and must still hold it once the first one's lease goes.
#[tokio::test]
async fn a_blob_found_present_outlives_the_lease_that_wrote_it() {
    let ns = Ns::new().await;
    let bytes = format!("shared source tree {}", crate::hex_id()).into_bytes();
    let first = ns
        .engine
        .create_lease("lw-test-first")
        .await
        .expect("lease");
    let second = ns
        .engine
        .create_lease("lw-test-second")
        .await
        .expect("lease");
    let blob = ns
        .engine
        .write_small_blob(&first, bytes.clone(), Default::default())
        .await
        .expect("first write");
    ns.engine
        .write_small_blob(&second, bytes, Default::default())
        .await
        .expect("second write (present already)");
    ns.engine
        .delete_lease(&first, true)
        .await
        .expect("first lease goes");
    assert!(
        ns.engine.content_info(&blob.digest).await.is_ok(),
        "the blob went with the first lease although the second one uses it"
    );
    ns.engine
        .delete_lease(&second, true)
        .await
        .expect("second lease goes");
    assert!(ns.engine.content_info(&blob.digest).await.is_err());
    ns.finish().await;
}
