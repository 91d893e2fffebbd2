//! Webhooks and their delivery log (tree `webhooks`: id → record; tree
//! `webhook_deliveries`: big-endian sequence → delivery, so a scan is
//! oldest first). A webhook's secret is kept as sensitive variables are:
//! in the state, never listed back.

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError, decode, encode};

pub(crate) const WEBHOOKS: &str = "webhooks";
pub(crate) const DELIVERIES: &str = "webhook_deliveries";

/// Where a project's events go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `W` and nine capitals and digits.
    pub id: String,
    pub project: String,
    pub url: String,
    /// `whsec_<base64>` (Standard Webhooks).
    pub secret: String,
    /// Event types sent; empty: all.
    pub events: Vec<String>,
    pub created_at: u64,
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One event for one webhook, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The store's sequence (oldest first).
    pub seq: u64,
    pub webhook: String,
    pub project: String,
    /// `activity.completed`, …
    pub event: String,
    /// `msg_…`: the `webhook-id` header, the same on every attempt.
    pub message_id: String,
    /// The JSON body, the same on every attempt.
    pub payload: String,
    pub created_at: u64,
    pub attempts: u32,
    pub state: DeliveryState,
    pub next_attempt_at: u64,
    /// The receiver's last status, when it answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: String,
    pub delivered_at: Option<u64>,
}

impl Store {
    pub fn put_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        self.webhooks
            .insert(webhook.id.as_bytes(), encode(webhook))?;
        self.flush()
    }

    /// A project's webhooks, or every project's.
    pub fn webhooks(&self, project: Option<&str>) -> Result<Vec<Webhook>, StoreError> {
        let all: Vec<Webhook> = Store::scan(&self.webhooks, WEBHOOKS, b"")?;
        Ok(all
            .into_iter()
            .filter(|w| project.is_none_or(|p| w.project == p))
            .collect())
    }

    pub fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        self.webhooks
            .get(id.as_bytes())?
            .map(|value| decode(WEBHOOKS, id.as_bytes(), &value))
            .transpose()
    }

    /// Removes a webhook; its deliveries stay in the log.
    pub fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self.webhooks.remove(id.as_bytes())?.is_some();
        self.flush()?;
        Ok(removed)
    }

    /// Records a delivery to make (its `seq` is assigned here).
    pub fn add_delivery(&self, mut delivery: Delivery) -> Result<Delivery, StoreError> {
        delivery.seq = self.db.generate_id()?;
        self.deliveries
            .insert(delivery.seq.to_be_bytes(), encode(&delivery))?;
        self.flush()?;
        Ok(delivery)
    }

    pub fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.deliveries
            .insert(delivery.seq.to_be_bytes(), encode(delivery))?;
        self.flush()
    }

    /// Forgets a delivery.
    pub fn delete_delivery(&self, seq: u64) -> Result<(), StoreError> {
        self.deliveries.remove(seq.to_be_bytes())?;
        self.flush()
    }

    /// Every delivery, oldest first.
    pub fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        Store::scan(&self.deliveries, DELIVERIES, b"")
    }
}
