//! What the workers of one server share with each other and with the handle that started them.
//!
//! Owns: `Shared` (the bus, admission, each worker's counters). A leaf: it knows no worker.

use std::sync::Arc;

use super::admission::Admission;
use super::bus::Bus;
use crate::metrics::{self, Snapshot, WorkerMetrics};

/// What the workers of one server share with each other and with the handle that started them.
pub(crate) struct Shared {
    pub(crate) bus: Bus,
    pub(crate) admission: Admission,
    /// Each worker's counters, in worker order.
    pub(crate) metrics: Vec<Arc<WorkerMetrics>>,
}

impl Shared {
    /// Each worker's counters, in worker order.
    pub(crate) fn worker_stats(&self) -> Vec<Snapshot> {
        self.metrics.iter().map(|m| metrics::merge([&**m])).collect()
    }

    /// Starts a graceful stop of every worker.
    pub(crate) fn request_stop(&self) {
        self.bus.request_stop();
    }
}
