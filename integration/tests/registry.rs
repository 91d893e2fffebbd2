//! `launchway-registry` against a real registry (Debian's docker-registry,
//! distribution 2.8.2, over TLS with htpasswd auth), with skopeo as an
//! independent reader of what it stored.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::process::Command;

use bytes::Bytes;
use futures_util::StreamExt as _;
use launchway_integration::random_bytes;
use launchway_integration::registry::TestRegistry;
use launchway_registry::{BodyStream, Registry, RegistryError, sha256_digest};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A repository of the test's own.
fn repository() -> String {
    format!("launchway/test{:016x}", rand::random::<u64>())
}

/// `bytes` in chunks of at most 64 KiB, as a stream to upload.
fn chunked(bytes: &Bytes) -> BodyStream {
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|at| Ok(bytes.slice(at..bytes.len().min(at + 64 * 1024))))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// An OCI image manifest for a config blob and one layer blob, written by
/// hand (its exact bytes are what the registry must keep).
fn image_manifest(config: &Bytes, layer: &Bytes) -> Bytes {
    Bytes::from(format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{OCI_MANIFEST}\",\n  \"config\": {{\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": \"{}\", \"size\": {}}},\n  \"layers\": [{{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", \"digest\": \"{}\", \"size\": {}}}],\n  \"annotations\": {{\"dev.launchway.test\": \"yes\"}}\n}}\n",
        sha256_digest(config),
        config.len(),
        sha256_digest(layer),
        layer.len()
    ))
}

/// A config blob and a layer blob of the image `seed` names, pushed.
async fn push_image(registry: &Registry, seed: u64) -> (Bytes, Bytes, Bytes) {
    let layer = Bytes::from(random_bytes(300_000, seed));
    let layer_digest = sha256_digest(&layer);
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{layer_digest}\"]}}}}"
    ));
    registry
        .push_blob(&layer_digest, layer.len() as u64, chunked(&layer))
        .await
        .unwrap();
    registry
        .push_blob_bytes(&sha256_digest(&config), config.clone())
        .await
        .unwrap();
    let manifest = image_manifest(&config, &layer);
    (config, layer, manifest)
}

/// `skopeo inspect --raw` of `reference` (`@digest` or `:tag`): what an
/// independent client reads, trusting the registry's CA through
/// `--cert-dir`.
fn skopeo_raw(registry: &TestRegistry, repository: &str, reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg("--cert-dir")
        .arg(registry.cert_dir())
        .arg("--creds")
        .arg(format!("{}:{}", registry.username(), registry.password()))
        .arg(format!(
            "docker://{}/{repository}{reference}",
            registry.host()
        ))
        .output()
        .expect("skopeo runs (scripts/setup.sh test installs it)");
    assert!(
        out.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn blobs_and_manifests_round_trip_through_a_real_registry() {
    let registry = TestRegistry::start();
    let repository = repository();
    let client = Registry::new(registry.config(&repository)).unwrap();
    assert_eq!(client.url(), registry.url());
    assert_eq!(client.repository(), repository);
    let runtime = runtime();
    let (manifest, digest) = runtime.block_on(async {
        client.ping().await.unwrap();
        assert!(client.tags().await.unwrap().is_empty(), "a new repository");

        let (config, layer, manifest) = push_image(&client, 7).await;
        let layer_digest = sha256_digest(&layer);
        assert!(
            client
                .blob_exists(&layer_digest, layer.len() as u64)
                .await
                .unwrap()
        );
        assert!(
            !client
                .blob_exists(&layer_digest, layer.len() as u64 + 1)
                .await
                .unwrap(),
            "another size is not the blob"
        );
        assert!(
            !client
                .blob_exists(&sha256_digest(b"never pushed"), 12)
                .await
                .unwrap()
        );
        assert!(
            client
                .blob_exists(&sha256_digest(&config), config.len() as u64)
                .await
                .unwrap()
        );
        // Pushing a blob again is harmless.
        client
            .push_blob_bytes(&sha256_digest(&config), config.clone())
            .await
            .unwrap();

        // By digest, then tagged.
        let digest = sha256_digest(&manifest);
        assert_eq!(
            client
                .manifest_put(&digest, OCI_MANIFEST, manifest.clone())
                .await
                .unwrap(),
            digest
        );
        assert_eq!(client.manifest_digest("v1").await.unwrap(), None);
        assert_eq!(
            client
                .manifest_put("v1", OCI_MANIFEST, manifest.clone())
                .await
                .unwrap(),
            digest
        );
        assert_eq!(
            client.manifest_digest("v1").await.unwrap().as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(
            client.manifest_digest(&digest).await.unwrap().as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(client.manifest_digest("v2").await.unwrap(), None);

        let got = client.manifest_get(&digest).await.unwrap();
        assert_eq!(got.bytes, manifest, "the bytes are kept as sent");
        assert_eq!(got.media_type, OCI_MANIFEST);
        assert_eq!(got.digest, digest);

        let (length, mut stream) = client.blob_get(&layer_digest).await.unwrap();
        assert_eq!(length, layer.len() as u64);
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(sha256_digest(&read), layer_digest);
        assert_eq!(read, layer);

        let error = client
            .blob_get(&sha256_digest(b"never pushed"))
            .await
            .err()
            .unwrap();
        assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");

        assert_eq!(client.tags().await.unwrap(), ["v1"]);
        (manifest, digest)
    });

    // An independent reader sees the same bytes, by digest and by tag.
    assert_eq!(
        skopeo_raw(&registry, &repository, &format!("@{digest}")),
        manifest
    );
    assert_eq!(skopeo_raw(&registry, &repository, ":v1"), manifest);

    runtime.block_on(async {
        // A manifest referencing a blob the repository lacks is refused by
        // the registry, with its words.
        let missing = image_manifest(&Bytes::from_static(b"{}"), &Bytes::from_static(b"nope"));
        let error = client
            .manifest_put("broken", OCI_MANIFEST, missing)
            .await
            .unwrap_err();
        match &error {
            RegistryError::Status { code, message, .. } => {
                assert_eq!(*code, 400, "{error}");
                assert!(
                    message.contains("BLOB_UNKNOWN") || message.contains("MANIFEST_BLOB_UNKNOWN"),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }

        // Deleting the manifest untags it; deleting again is fine.
        client.delete_manifest(&digest).await.unwrap();
        assert_eq!(client.manifest_digest("v1").await.unwrap(), None);
        assert!(client.tags().await.unwrap().is_empty());
        let error = client.manifest_get(&digest).await.unwrap_err();
        assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
        client.delete_manifest(&digest).await.unwrap();
    });
}

#[test]
fn wrong_credentials_and_an_untrusted_certificate_are_named() {
    let registry = TestRegistry::start();
    let runtime = runtime();
    runtime.block_on(async {
        let mut config = registry.config("launchway/creds");
        config.password = Some("not-the-password".to_owned());
        let error = Registry::new(config).unwrap().ping().await.unwrap_err();
        assert!(matches!(error, RegistryError::Auth { .. }), "{error:?}");
        let said = error.to_string();
        assert_eq!(
            said,
            format!(
                "the image registry at {} refused the credentials (401): check [registry] username and password_file",
                registry.url()
            )
        );

        let mut config = registry.config("launchway/creds");
        config.username = None;
        config.password = None;
        let error = Registry::new(config).unwrap().ping().await.unwrap_err();
        assert!(error.to_string().contains("asks for credentials"), "{error}");

        // The system roots do not know the test CA.
        let mut config = registry.config("launchway/creds");
        config.ca_pem = None;
        let error = Registry::new(config).unwrap().ping().await.unwrap_err();
        assert!(matches!(error, RegistryError::Unreachable { .. }), "{error:?}");
        let said = error.to_string();
        assert!(
            said.contains(registry.url()) && said.contains("TLS") && said.contains("ca_file"),
            "{said}"
        );
    });
}

#[test]
fn a_stopped_registry_is_unreachable_and_keeps_its_data_across_a_restart() {
    let mut registry = TestRegistry::start();
    let repository = repository();
    let client = Registry::new(registry.config(&repository)).unwrap();
    let runtime = runtime();
    let digest = runtime.block_on(async {
        let (_, _, manifest) = push_image(&client, 11).await;
        client
            .manifest_put("kept", OCI_MANIFEST, manifest)
            .await
            .unwrap()
    });
    let url = registry.url().to_owned();

    registry.stop();
    runtime.block_on(async {
        let error = client.ping().await.unwrap_err();
        assert!(
            matches!(error, RegistryError::Unreachable { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("the image registry at {url} does not answer (connection refused)")
        );
        let error = client.manifest_digest("kept").await.unwrap_err();
        assert!(error.to_string().contains(&url), "{error}");
    });

    registry.restart();
    assert_eq!(registry.url(), url, "the same port");
    runtime.block_on(async {
        // The same client goes on: its pool and credentials recover.
        client.ping().await.unwrap();
        assert_eq!(
            client.manifest_digest("kept").await.unwrap().as_deref(),
            Some(digest.as_str())
        );
        let manifest = client.manifest_get(&digest).await.unwrap();
        assert_eq!(manifest.digest, digest);
        assert_eq!(client.tags().await.unwrap(), ["kept"]);
    });
}
