//! Webhooks: a project's activities and deploys as signed HTTP events.
//!
//! - Events: `activity.started`, `activity.completed` (every activity), and
//!   `deploy.succeeded` / `deploy.failed` (activities that deployed, or
//!   tried to). The body is `{"type", "timestamp", "data": {activity}}`.
//! - Signed as Standard Webhooks sign: headers `webhook-id` (the same on
//!   every attempt, for receivers to deduplicate), `webhook-timestamp` (UNIX
//!   seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "{id}.{timestamp}.{body}" keyed by the secret's bytes>`.
//! - Each delivery is recorded before it is tried (the outbox is the
//!   `webhook_deliveries` tree, so a restart goes on where it was); failures
//!   (no answer, or not 2xx) are tried again after `[webhooks]
//!   first_retry_secs`, then four times longer each time up to an hour, at
//!   most `attempts` times. `launchway webhook deliveries` shows the log.
//! - The secret (`whsec_<base64 of 24 random bytes>`) is shown once, at
//!   creation, and kept as sensitive variables are.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{KeyInit as _, Mac as _};
use http_body_util::{BodyExt as _, Full};
use launchway_api::proto;
use launchway_store::{Activity, ActivityResult, Delivery, DeliveryState, Webhook};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::api::internal;
use crate::{Daemon, now_ms};

/// The event types a webhook may ask for.
pub(crate) const EVENTS: &[&str] = &[
    "activity.started",
    "activity.completed",
    "deploy.succeeded",
    "deploy.failed",
];

/// `v1,<signature>` of `body` for message `id` at `timestamp`.
pub(crate) fn signature(secret: &str, id: &str, timestamp: u64, body: &str) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The wait after `attempts` failed attempts.
pub(crate) fn retry_delay(first_secs: u64, attempts: u32) -> Duration {
    let factor = 4u64.saturating_pow(attempts.saturating_sub(1));
    Duration::from_secs(first_secs.max(1).saturating_mul(factor).min(3600))
}

fn webhook_info(webhook: &Webhook, secret: String) -> proto::WebhookInfo {
    proto::WebhookInfo {
        id: webhook.id.clone(),
        project: webhook.project.clone(),
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        created_at: webhook.created_at,
        secret,
    }
}

fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Daemon {
    /// `launchway webhook add`.
    pub(crate) fn create_webhook(
        &self,
        request: &proto::CreateWebhookRequest,
    ) -> Result<proto::WebhookInfo, Status> {
        let project = self.existing_project(&request.project)?;
        let url = request.url.trim();
        let parsed: hyper::Uri = url
            .parse()
            .map_err(|_| Status::invalid_argument(format!("`{url}` is not a URL")))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(Status::invalid_argument(format!(
                "`{url}` is not an http:// or https:// URL with a host"
            )));
        }
        if !self.settings.webhooks.allow_local
            && let Some(host) = parsed.host()
            && names_this_host(host)
        {
            return Err(Status::invalid_argument(format!(
                "`{url}` points at this host or a link-local address, which webhooks may not reach (the operator allows it with `[webhooks] allow_local = true`)"
            )));
        }
        for event in &request.events {
            if !EVENTS.contains(&event.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "`{event}` is not an event: use {}",
                    EVENTS.join(", ")
                )));
            }
        }
        let random: [u8; 24] = rand::random();
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(random)
        );
        let webhook = Webhook {
            id: crate::builds::new_record_id('W'),
            project: project.name,
            url: url.to_owned(),
            secret: secret.clone(),
            events: request.events.clone(),
            created_at: now_ms(),
        };
        self.store.put_webhook(&webhook).map_err(internal)?;
        Ok(webhook_info(&webhook, secret))
    }

    /// `launchway webhooks`.
    pub(crate) fn list_webhooks(&self, project: &str) -> Result<proto::WebhookList, Status> {
        let project = self.existing_project(project)?;
        let webhooks = self.store.webhooks(Some(&project.name)).map_err(internal)?;
        Ok(proto::WebhookList {
            webhooks: webhooks
                .iter()
                .map(|w| webhook_info(w, String::new()))
                .collect(),
        })
    }

    /// `launchway webhook remove`.
    pub(crate) fn delete_webhook(&self, id: &str) -> Result<proto::DeleteWebhookReply, Status> {
        let removed = self.store.delete_webhook(id.trim()).map_err(internal)?;
        if removed {
            Ok(proto::DeleteWebhookReply { removed })
        } else {
            Err(Status::not_found(format!("there is no webhook {id}")))
        }
    }

    /// `launchway webhook deliveries`: newest first.
    pub(crate) fn list_deliveries(
        &self,
        request: &proto::ListWebhookDeliveriesRequest,
    ) -> Result<proto::WebhookDeliveryList, Status> {
        let project = self.existing_project(&request.project)?;
        let limit = if request.limit == 0 {
            50
        } else {
            request.limit as usize
        };
        let deliveries = self.store.deliveries().map_err(internal)?;
        Ok(proto::WebhookDeliveryList {
            deliveries: deliveries
                .iter()
                .rev()
                .filter(|d| d.project == project.name)
                .filter(|d| request.webhook.is_empty() || d.webhook == request.webhook)
                .take(limit)
                .map(|d| proto::WebhookDelivery {
                    seq: d.seq,
                    webhook: d.webhook.clone(),
                    event: d.event.clone(),
                    message_id: d.message_id.clone(),
                    state: d.state.as_str().into(),
                    attempts: d.attempts,
                    last_status: d.last_status.map(u32::from).unwrap_or_default(),
                    last_error: d.last_error.clone(),
                    created_at: d.created_at,
                    delivered_at: d.delivered_at.unwrap_or_default(),
                    next_attempt_at: d.next_attempt_at,
                })
                .collect(),
        })
    }

    /// Records the deliveries of `event` about `activity` to the project's
    /// webhooks that want it, and wakes the sender.
    pub(crate) fn emit(&self, event: &str, activity: &Activity) {
        let webhooks = match self.store.webhooks(Some(&activity.project)) {
            Ok(webhooks) => webhooks,
            Err(error) => {
                warn!(%error, "cannot read the webhooks");
                return;
            }
        };
        let now = now_ms();
        let data = crate::activity_views::activity_info(activity);
        let body = serde_json::json!({
            "type": event,
            "timestamp": rfc3339(now),
            "data": data,
        })
        .to_string();
        for webhook in webhooks
            .iter()
            .filter(|w| w.events.is_empty() || w.events.iter().any(|e| e == event))
        {
            let random: [u8; 12] = rand::random();
            let delivery = Delivery {
                seq: 0,
                webhook: webhook.id.clone(),
                project: webhook.project.clone(),
                event: event.to_owned(),
                message_id: format!("msg_{}", hex::encode(random)),
                payload: body.clone(),
                created_at: now,
                attempts: 0,
                state: DeliveryState::Pending,
                next_attempt_at: now,
                last_status: None,
                last_error: String::new(),
                delivered_at: None,
            };
            if let Err(error) = self.store.add_delivery(delivery) {
                warn!(%error, "cannot record a webhook delivery");
            }
        }
        self.deliveries_due.notify_one();
    }

    /// The events of an activity's end.
    pub(crate) fn emit_completed(&self, activity: &Activity) {
        self.emit("activity.completed", activity);
        if activity.timings.contains_key("deploy") {
            let event = if activity.result == Some(ActivityResult::Success) {
                "deploy.succeeded"
            } else {
                "deploy.failed"
            };
            self.emit(event, activity);
        }
    }

    /// Sends due deliveries until `stop`: at once when woken, else every
    /// second.
    pub(crate) async fn deliver_webhooks_forever(self: Arc<Self>, stop: CancellationToken) {
        // Names are resolved through the guard, so a name that resolves to
        // this host is refused at connection time too (not only at `add`).
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(
            GuardedResolver {
                allow_local: self.settings.webhooks.allow_local,
            },
        );
        http.enforce_http(false);
        let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder
                .https_or_http()
                .enable_http1()
                .wrap_connector(http.clone()),
            Err(error) => {
                warn!(%error, "no system certificates: webhooks to https:// URLs will fail");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(
                        rustls::ClientConfig::builder_with_provider(Arc::new(
                            rustls::crypto::aws_lc_rs::default_provider(),
                        ))
                        .with_safe_default_protocol_versions()
                        .map_or_else(
                            |_| unreachable_config(),
                            |b| {
                                b.with_root_certificates(rustls::RootCertStore::empty())
                                    .with_no_client_auth()
                            },
                        ),
                    )
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        loop {
            let due: Vec<Delivery> = self
                .store
                .deliveries()
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.state == DeliveryState::Pending && d.next_attempt_at <= now_ms())
                .collect();
            for delivery in due {
                if stop.is_cancelled() {
                    return;
                }
                self.attempt(&client, delivery).await;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.deliveries_due.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn attempt<C>(
        &self,
        client: &hyper_util::client::legacy::Client<C, Full<Bytes>>,
        mut delivery: Delivery,
    ) where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        let Ok(Some(webhook)) = self.store.webhook(&delivery.webhook) else {
            delivery.state = DeliveryState::Failed;
            delivery.last_error = "the webhook was removed".into();
            let _ = self.store.put_delivery(&delivery);
            return;
        };
        let timestamp = now_ms() / 1000;
        let signed = signature(
            &webhook.secret,
            &delivery.message_id,
            timestamp,
            &delivery.payload,
        );
        let request = hyper::Request::post(&webhook.url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("launchway/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .body(Full::new(Bytes::from(delivery.payload.clone())));
        delivery.attempts += 1;
        let timeout = Duration::from_secs(self.settings.webhooks.timeout_secs.max(1));
        let literal_local = !self.settings.webhooks.allow_local
            && webhook
                .url
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(names_this_host))
                .unwrap_or(false);
        let outcome = match request {
            _ if literal_local => Err(
                "the URL points at this host or a link-local address, which webhooks may not reach ([webhooks] allow_local)".to_owned(),
            ),
            Err(error) => Err(format!("the URL cannot be requested: {error}")),
            Ok(request) => match tokio::time::timeout(timeout, client.request(request)).await {
                Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
                Ok(Err(error)) => Err(format!("cannot reach the receiver: {error}")),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let _ = tokio::time::timeout(timeout, response.into_body().collect()).await;
                    delivery.last_status = Some(status.as_u16());
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("the receiver answered {status}"))
                    }
                }
            },
        };
        match outcome {
            Ok(()) => {
                delivery.state = DeliveryState::Delivered;
                delivery.delivered_at = Some(now_ms());
                delivery.last_error.clear();
            }
            Err(error) => {
                delivery.last_error = error;
                if delivery.attempts >= self.settings.webhooks.attempts.max(1) {
                    delivery.state = DeliveryState::Failed;
                } else {
                    let wait =
                        retry_delay(self.settings.webhooks.first_retry_secs, delivery.attempts);
                    delivery.next_attempt_at = now_ms() + wait.as_millis() as u64;
                }
            }
        }
        if let Err(error) = self.store.put_delivery(&delivery) {
            warn!(%error, "cannot record a webhook delivery");
        }
    }
}

fn unreachable_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_host_and_link_local_addresses_are_recognised() {
        for local in [
            "localhost",
            "api.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "0.0.0.0",
            "169.254.169.254",
            "[fe80::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(super::names_this_host(local), "{local}");
        }
        for remote in [
            "example.com",
            "10.0.0.5",
            "192.168.1.2",
            "[2001:db8::1]",
            "8.8.8.8",
        ] {
            assert!(!super::names_this_host(remote), "{remote}");
        }
    }

    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's test suite.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, id, 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retries_wait_longer_each_time_up_to_an_hour() {
        assert_eq!(retry_delay(5, 1), Duration::from_secs(5));
        assert_eq!(retry_delay(5, 2), Duration::from_secs(20));
        assert_eq!(retry_delay(5, 3), Duration::from_secs(80));
        assert_eq!(retry_delay(5, 30), Duration::from_secs(3600));
    }
}

/// Whether webhooks may not reach `ip` unless allowed: this host
/// (loopback, unspecified) and link-local addresses (cloud metadata
/// services); multicast and broadcast are never receivers.
fn is_local(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_local(IpAddr::V4(v4)))
        }
    }
}

/// Whether a URL's host names this host or a link-local address without
/// any resolution (`localhost`, an address literal).
fn names_this_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lowered = host.to_ascii_lowercase();
    if lowered == "localhost" || lowered.ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(is_local)
}

/// Resolves receivers' names, keeping only addresses webhooks may reach.
#[derive(Clone, Debug)]
struct GuardedResolver {
    allow_local: bool,
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow_local = self.allow_local;
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|address| allow_local || !is_local(address.ip()))
                .collect();
            if kept.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{name} resolves only to this host or link-local addresses, which webhooks may not reach ([webhooks] allow_local)"
                )));
            }
            Ok(kept.into_iter())
        })
    }
}
