//! Activities as the API shows them: lists, stored logs, and following a
//! log: what is stored after a position, then each
//! piece as it is written, then the end. Positions are the store's, so a
//! reader that reconnects with the last one it saw (the HTTP API's
//! `Last-Event-ID`) misses nothing and sees nothing twice.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use launchway_api::proto;
use launchway_store::{Activity, ActivityResult, ActivityState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::Daemon;
use crate::api::internal;

/// The stream `FollowActivity` answers.
pub(crate) type FollowStream = ReceiverStream<Result<proto::LogEntry, Status>>;

/// How long a follower waits without a wake-up before it looks again
/// anyway (a missed wake-up costs at most this).
const RECHECK: Duration = Duration::from_secs(1);

pub(crate) fn activity_info(activity: &Activity) -> proto::ActivityInfo {
    proto::ActivityInfo {
        id: activity.id,
        project: activity.project.clone(),
        environment: activity.environment.clone(),
        r#type: activity.kind.as_str().into(),
        description: activity.description.clone(),
        state: activity.state.as_str().into(),
        result: activity
            .result
            .map(|r| r.as_str().into())
            .unwrap_or_default(),
        created_at: activity.created_at,
        started_at: activity.started_at.unwrap_or_default(),
        completed_at: activity.completed_at.unwrap_or_default(),
        timings_ms: activity.timings.clone().into_iter().collect(),
    }
}

impl Daemon {
    /// `launchway activities`: newest first.
    pub(crate) fn list_activities(
        &self,
        request: &proto::ListActivitiesRequest,
    ) -> Result<proto::ActivityList, Status> {
        let project = if request.project.is_empty() {
            None
        } else {
            Some(self.existing_project(&request.project)?.name)
        };
        let environment = (!request.environment.is_empty()).then_some(request.environment.as_str());
        let page = crate::paging::page_from(
            |after, n| {
                self.store
                    .activities_page(project.as_deref(), environment, after.map(|a| a.0), n)
                    .map_err(internal)
            },
            |a| (a.id, String::new()),
            &request.cursor,
            request.limit,
            20,
        )?;
        Ok(proto::ActivityList {
            activities: page.items.iter().map(activity_info).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// `launchway activity log`: the stored log as it is now.
    pub(crate) fn activity_log(&self, id: u64) -> Result<proto::ActivityLogReply, Status> {
        let activity = self
            .store
            .activity(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no activity {id}")))?;
        let log = self.store.log(id).map_err(internal)?;
        Ok(proto::ActivityLogReply {
            activity: Some(activity_info(&activity)),
            log,
        })
    }

    /// `FollowActivity`: the log of activity `id` after position `after`.
    pub(crate) fn follow_activity(
        self: &Arc<Self>,
        id: u64,
        after: u64,
    ) -> Result<FollowStream, Status> {
        if self.store.activity(id).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!("there is no activity {id}")));
        }
        let (sender, receiver) = mpsc::channel(64);
        let daemon = self.clone();
        tokio::spawn(async move {
            let mut last = after;
            loop {
                let mut woken = Box::pin(daemon.log_written.notified());
                Pin::as_mut(&mut woken).enable();
                // The state first: once it is final, every line is stored.
                let activity = match daemon.store.activity(id) {
                    Ok(Some(activity)) => activity,
                    Ok(None) => return,
                    Err(error) => {
                        let _ = sender.send(Err(internal(error))).await;
                        return;
                    }
                };
                let pieces = match daemon.store.log_after(id, last) {
                    Ok(pieces) => pieces,
                    Err(error) => {
                        let _ = sender.send(Err(internal(error))).await;
                        return;
                    }
                };
                for (seq, text) in pieces {
                    let entry = proto::LogEntry {
                        seq,
                        text,
                        ..proto::LogEntry::default()
                    };
                    if sender.send(Ok(entry)).await.is_err() {
                        return;
                    }
                    last = seq;
                }
                if matches!(
                    activity.state,
                    ActivityState::Complete | ActivityState::Cancelled
                ) {
                    let done = proto::LogEntry {
                        seq: last,
                        done: true,
                        failed: activity.result != Some(ActivityResult::Success),
                        state: activity.state.as_str().into(),
                        ..proto::LogEntry::default()
                    };
                    let _ = sender.send(Ok(done)).await;
                    return;
                }
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(RECHECK) => {}
                    () = sender.closed() => return,
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}
