//! Streaming blob writes: Content.Write is a bidirectional stream (STAT,
//! WRITE…, COMMIT), answered message by message. The bytes are hashed here as
//! they pass, so a blob that does not match its digest is refused with a
//! clear error before containerd is asked to commit it, and its partial
//! ingest is aborted.

use std::collections::HashMap;

use containerd_client::services::v1::{AbortRequest, WriteAction, WriteContentRequest};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::digest::Hasher;
use crate::engine::{Blob, Engine, Lease, WRITE_CHUNK, random_id};
use crate::error::{EngineError, Result};

/// WRITE messages sent before the first of them must be answered.
const WRITES_IN_FLIGHT: usize = 8;

pub(crate) async fn write<S>(
    engine: &Engine,
    lease: &Lease,
    digest: &str,
    size: u64,
    mut chunks: S,
    labels: HashMap<String, String>,
) -> Result<Blob>
where
    S: Stream<Item = Result<Vec<u8>>> + Unpin,
{
    if !crate::digest::is_sha256_digest(digest) {
        return Err(EngineError::Archive {
            reason: format!("'{digest}' is not a sha256 digest"),
        });
    }
    // Present already: read the bytes through anyway (the caller's stream must
    // be consumed and checked), then only merge labels. The blob joins our
    // lease first: the lease that keeps it now may be another build's, and a
    // blob checked present and then collected is a layer "not found" later.
    engine.hold_content(lease, digest).await?;
    if engine.content_info(digest).await.is_ok() {
        let mut hasher = Hasher::default();
        let mut written = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            hasher.update(&chunk);
        }
        check(digest, size, written, hasher.finish())?;
        engine.label_content(digest, &labels).await?;
        return Ok(Blob {
            digest: digest.to_string(),
            size,
        });
    }

    let reference = random_id("lw-ingest");
    let (sender, receiver) = mpsc::channel::<WriteContentRequest>(WRITES_IN_FLIGHT);
    let stat = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.clone(),
        total: size as i64,
        expected: digest.to_string(),
        ..Default::default()
    };
    if sender.send(stat).await.is_err() {
        return Err(internal("content write stream closed"));
    }
    let mut client = engine.content();
    let mut answers = client
        .write(engine.leased(ReceiverStream::new(receiver), lease))
        .await
        .map_err(|status| EngineError::rpc("content write", || format!("blob {digest}"), status))?
        .into_inner();
    let result = async {
        next_answer(&mut answers, digest).await?;
        let mut hasher = Hasher::default();
        let mut offset = 0u64;
        let mut in_flight = 0usize;
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = chunks.next().await.transpose()?;
            let finished = chunk.is_none();
            if let Some(chunk) = chunk {
                hasher.update(&chunk);
                pending.extend_from_slice(&chunk);
                if offset + pending.len() as u64 > size {
                    return Err(EngineError::Archive {
                        reason: format!("blob {digest} is longer than the {size} bytes declared"),
                    });
                }
            }
            while pending.len() >= WRITE_CHUNK || (finished && !pending.is_empty()) {
                let take = pending.len().min(WRITE_CHUNK);
                // The chunk moves into the message; only the (small) rest
                // beyond it is copied.
                let rest = pending.split_off(take);
                let data = std::mem::replace(&mut pending, rest);
                let length = data.len() as u64;
                let message = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total: size as i64,
                    offset: offset as i64,
                    data,
                    ..Default::default()
                };
                sender
                    .send(message)
                    .await
                    .map_err(|_| internal("content write stream closed"))?;
                in_flight += 1;
                // A few writes stay unanswered, so that reading the source
                // (a download) overlaps with containerd storing the bytes.
                if in_flight == WRITES_IN_FLIGHT {
                    next_answer(&mut answers, digest).await?;
                    in_flight -= 1;
                }
                offset += length;
            }
            if finished {
                break;
            }
        }
        for _ in 0..in_flight {
            next_answer(&mut answers, digest).await?;
        }
        check(digest, size, offset, hasher.finish())?;
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size as i64,
            offset: offset as i64,
            expected: digest.to_string(),
            labels: labels.clone(),
            ..Default::default()
        };
        sender
            .send(commit)
            .await
            .map_err(|_| internal("content write stream closed"))?;
        match next_answer(&mut answers, digest).await {
            Ok(()) => {}
            // Someone committed the same bytes meanwhile: same content, keep labels.
            Err(error) if error.is_already_exists() => {
                engine.label_content(digest, &labels).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(Blob {
            digest: digest.to_string(),
            size,
        })
    }
    .await;
    drop(sender);
    if result.is_err() {
        let _ = engine
            .content()
            .abort(engine.request(AbortRequest { r#ref: reference }))
            .await;
    }
    result
}

fn check(digest: &str, size: u64, written: u64, actual: String) -> Result<()> {
    if written != size {
        return Err(EngineError::Archive {
            reason: format!(
                "blob {digest} is {written} bytes, the archive declared {size} (truncated?)"
            ),
        });
    }
    if actual != digest {
        return Err(EngineError::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

async fn next_answer(
    answers: &mut tonic::Streaming<containerd_client::services::v1::WriteContentResponse>,
    digest: &str,
) -> Result<()> {
    match answers.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(status)) => Err(EngineError::rpc(
            "content write",
            || format!("blob {digest}"),
            status,
        )),
        None => Err(internal("containerd closed the content write")),
    }
}

fn internal(message: &str) -> EngineError {
    EngineError::Rpc {
        operation: "content write",
        code: tonic::Code::Internal,
        message: message.to_string(),
    }
}
