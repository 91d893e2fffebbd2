use std::collections::HashMap;
use std::process::Command;

use launchway_containerd::archive::{ImportOptions, export, import};
use launchway_containerd::{Engine, EngineError, Rootfs};

use crate::{BUSYBOX, Ns, hex_id, remove_namespace, run_sh, sh, socket, stdout_of};

async fn frozen_image(ns: &Ns) -> Vec<u8> {
    let workspace = ns.engine.workspace(BUSYBOX).await.expect("workspace");
    let (outcome, _) = run_sh(
        &ns.engine,
        Rootfs::Workspace(&workspace),
        sh("echo exported > /app/proof"),
    )
    .await;
    assert!(outcome.success());
    workspace
        .freeze(
            "test/app:v1",
            HashMap::from([("org.launchway.commit".to_string(), "abc".to_string())]),
        )
        .await
        .expect("freeze");
    let mut archive = Vec::new();
    export(&ns.engine, &["test/app:v1".to_string()], &mut archive)
        .await
        .expect("export");
    archive
}

async fn other_namespace(ns: &Ns) -> Engine {
    ns.engine
        .with_namespace(&format!("lwtest-{}", hex_id()))
        .expect("namespace")
}

fn blob_offsets(archive: &[u8]) -> Vec<(String, u64, u64)> {
    let mut entries = tar::Archive::new(archive);
    entries
        .entries()
        .expect("tar")
        .map(|entry| {
            let entry = entry.expect("entry");
            (
                entry.path().expect("path").display().to_string(),
                entry.raw_file_position(),
                entry.size(),
            )
        })
        .collect()
}

#[tokio::test]
async fn export_then_import_elsewhere_runs() {
    let ns = Ns::new().await;
    let archive = frozen_image(&ns).await;
    let elsewhere = other_namespace(&ns).await;
    let imported = import(
        &elsewhere,
        std::io::Cursor::new(archive.clone()),
        &ImportOptions::default(),
    )
    .await
    .expect("import");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "test/app:v1");
    let (outcome, lines) = run_sh(
        &elsewhere,
        Rootfs::Image {
            name: "test/app:v1",
            writable: false,
        },
        sh("cat /app/proof"),
    )
    .await;
    assert!(outcome.success());
    assert_eq!(stdout_of(&lines), ["exported"]);
    let image = elsewhere.image("test/app:v1").await.expect("image");
    assert_eq!(
        image
            .annotations()
            .get("org.launchway.commit")
            .map(String::as_str),
        Some("abc")
    );
    // Importing the same archive again changes nothing and succeeds.
    let before = elsewhere.inventory().await.expect("inventory");
    import(
        &elsewhere,
        std::io::Cursor::new(archive),
        &ImportOptions::default(),
    )
    .await
    .expect("re-import");
    assert_eq!(elsewhere.inventory().await.expect("inventory"), before);
    remove_namespace(&elsewhere).await;
    ns.finish().await;
}

#[tokio::test]
async fn ctr_loads_our_exports() {
    let ns = Ns::new().await;
    let archive = frozen_image(&ns).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("app.tar");
    std::fs::write(&path, &archive).expect("write");
    let namespace = format!("lwtest-{}", hex_id());
    let output = Command::new("ctr")
        .args([
            "--address",
            &socket().display().to_string(),
            "--namespace",
            &namespace,
            "images",
            "import",
        ])
        .arg(&path)
        .output()
        .expect("ctr runs");
    assert!(
        output.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let elsewhere = ns.engine.with_namespace(&namespace).expect("ns");
    let (outcome, lines) = run_sh(
        &elsewhere,
        Rootfs::Image {
            name: "test/app:v1",
            writable: false,
        },
        sh("cat /app/proof"),
    )
    .await;
    assert!(outcome.success(), "{lines:?}");
    assert_eq!(stdout_of(&lines), ["exported"]);
    remove_namespace(&elsewhere).await;
    ns.finish().await;
}

#[tokio::test]
async fn corrupt_or_truncated_archives_are_refused_and_store_nothing() {
    let ns = Ns::new().await;
    let archive = frozen_image(&ns).await;
    let elsewhere = other_namespace(&ns).await;
    let before = elsewhere.inventory().await.expect("inventory");

    // The biggest blob is the layer: flip one byte in its middle.
    let (path, offset, size) = blob_offsets(&archive)
        .into_iter()
        .max_by_key(|(_, _, size)| *size)
        .expect("entries");
    assert!(path.starts_with("blobs/sha256/"));
    let mut flipped = archive.clone();
    flipped[(offset + size / 2) as usize] ^= 0x01;
    let error = import(
        &elsewhere,
        std::io::Cursor::new(flipped),
        &ImportOptions::default(),
    )
    .await
    .expect_err("flipped byte refused");
    assert!(
        matches!(error, EngineError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("nothing was stored"), "{error}");
    assert_eq!(elsewhere.inventory().await.expect("inventory"), before);

    // Cut inside the layer blob.
    let truncated = archive[..(offset + size / 2) as usize].to_vec();
    let error = import(
        &elsewhere,
        std::io::Cursor::new(truncated),
        &ImportOptions::default(),
    )
    .await
    .expect_err("truncated archive refused");
    assert!(matches!(error, EngineError::Archive { .. }), "{error}");
    assert_eq!(elsewhere.inventory().await.expect("inventory"), before);

    // Not a tar at all, and a tar without index.json.
    let error = import(
        &elsewhere,
        std::io::Cursor::new(b"not an archive".repeat(100)),
        &ImportOptions::default(),
    )
    .await
    .expect_err("garbage refused");
    assert!(matches!(error, EngineError::Archive { .. }), "{error}");
    let mut without_index = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut without_index);
        let mut header = tar::Header::new_ustar();
        header.set_size(3);
        header.set_cksum();
        builder
            .append_data(&mut header, "oci-layout", &b"{}\n"[..])
            .expect("append");
        builder.finish().expect("finish");
    }
    let error = import(
        &elsewhere,
        std::io::Cursor::new(without_index),
        &ImportOptions::default(),
    )
    .await
    .expect_err("no index refused");
    assert!(error.to_string().contains("index.json"), "{error}");
    assert_eq!(elsewhere.inventory().await.expect("inventory"), before);
    let _ = elsewhere.delete_namespace().await;
    ns.finish().await;
}

/// A tar of `entries`: `(path, kind, bytes or link target, declared size)`.
fn hostile_tar(entries: &[(&str, tar::EntryType, &[u8], Option<u64>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, bytes, declared) in entries {
        let mut header = tar::Header::new_gnu();
        // Raw names: the tar crate refuses `..` when asked nicely.
        let name = path.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            header
                .set_link_name(std::str::from_utf8(bytes).unwrap())
                .unwrap();
            header.set_size(0);
        } else {
            header.set_size(declared.unwrap_or(bytes.len() as u64));
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        if *kind != tar::EntryType::Symlink {
            out.extend_from_slice(bytes);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[tokio::test]
async fn hostile_archives_are_refused_and_store_nothing() {
    let ns = Ns::new().await;
    let elsewhere = other_namespace(&ns).await;
    let before = elsewhere.inventory().await.expect("inventory");
    let digest = "a".repeat(64);
    let blob_path = format!("blobs/sha256/{digest}");
    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "path traversal",
            hostile_tar(&[
                (
                    "../../../../tmp/launchway-evil",
                    tar::EntryType::Regular,
                    b"x",
                    None,
                ),
                ("/etc/launchway-evil", tar::EntryType::Regular, b"x", None),
                (
                    "blobs/sha256/../../index.json",
                    tar::EntryType::Regular,
                    index,
                    None,
                ),
            ]),
        ),
        (
            "a symlink as index.json",
            hostile_tar(&[("index.json", tar::EntryType::Symlink, b"/etc/passwd", None)]),
        ),
        (
            "a symlink as a blob",
            hostile_tar(&[
                (&blob_path, tar::EntryType::Symlink, b"/etc/shadow", None),
                ("index.json", tar::EntryType::Regular, index, None),
            ]),
        ),
        (
            "a blob not named by a digest",
            hostile_tar(&[
                ("blobs/sha256/not-hex", tar::EntryType::Regular, b"x", None),
                ("index.json", tar::EntryType::Regular, index, None),
            ]),
        ),
        (
            "a huge index.json",
            hostile_tar(&[("index.json", tar::EntryType::Regular, b"{", Some(1 << 40))]),
        ),
        (
            "a huge blob that ends early",
            hostile_tar(&[(&blob_path, tar::EntryType::Regular, b"x", Some(1 << 40))]),
        ),
        (
            "a blob whose content is not its digest",
            hostile_tar(&[
                (
                    &blob_path,
                    tar::EntryType::Regular,
                    b"not what the name says",
                    None,
                ),
                ("index.json", tar::EntryType::Regular, index, None),
            ]),
        ),
    ];
    for (what, archive) in cases {
        let refused = import(
            &elsewhere,
            std::io::Cursor::new(archive),
            &ImportOptions::default(),
        )
        .await;
        assert!(refused.is_err(), "{what}: accepted");
        assert_eq!(
            elsewhere.inventory().await.expect("inventory"),
            before,
            "{what}: something was stored"
        );
    }
    assert!(!std::path::Path::new("/tmp/launchway-evil").exists());
    assert!(!std::path::Path::new("/etc/launchway-evil").exists());
    let _ = elsewhere.delete_namespace().await;
    ns.finish().await;
}
