//! What the workers of one server share with each other and with the handle that started them,
//! and the actions any thread may take through the bus.
//!
//! Owns: `Shared` (the bus, admission, each worker's counters, the TLS settings) and the bus actions a callback's
//! `Io` and the server layer's `Remote` have in common: a data frame encoded once, then handed
//! to the bus. A leaf: it knows no worker. Invariants: `from` names the calling worker, or
//! `NO_WORKER` for a thread that is none (the target is then always woken); a publish is
//! counted on the calling worker's counters only, because each counter has one writer, so a
//! publish from outside the workers is counted nowhere.

use std::sync::Arc;

use bytes::Bytes;

use super::admission::Admission;
use super::bus::{Bus, Envelope};
use super::tls_config::TlsShared;
use super::token::ConnId;
use crate::metrics::{self, Snapshot, WorkerMetrics};
use crate::proto::frame::encode_data_frame;
use crate::proto::CloseCode;

/// The `from` of the bus calls made by a thread that is no worker (a `Remote`, a deferred HTTP
/// response, which any thread may send). It equals no worker index, so the bus always wakes the
/// target worker.
pub(crate) const NO_WORKER: usize = usize::MAX;

/// What the workers of one server share with each other and with the handle that started them.
pub(crate) struct Shared {
    pub(crate) bus: Bus,
    pub(crate) admission: Admission,
    /// Each worker's counters, in worker order.
    pub(crate) metrics: Vec<Arc<WorkerMetrics>>,
    /// The certificate and key every TLS handshake uses, when the server has them.
    pub(crate) tls: Option<Arc<TlsShared>>,
}

impl Shared {
    /// Each worker's counters, in worker order.
    pub(crate) fn worker_stats(&self) -> Vec<Snapshot> {
        self.metrics.iter().map(|m| metrics::merge([&**m])).collect()
    }

    /// The number of workers.
    pub(crate) fn workers(&self) -> usize {
        self.metrics.len()
    }

    /// Reads the certificate and key files again for new handshakes; on error the serving pair
    /// stays. An error too when the server has no TLS.
    pub(crate) fn reload_tls(&self) -> std::io::Result<()> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the server has no TLS certificate")),
        }
    }

    /// The serving certificate's notAfter, in seconds since the Unix epoch, when the server
    /// has TLS.
    pub(crate) fn tls_cert_expiry(&self) -> Option<u64> {
        self.tls.as_ref().map(|tls| tls.expiry())
    }

    /// Starts a graceful stop of every worker.
    pub(crate) fn request_stop(&self) {
        self.bus.request_stop();
    }

    /// A frame for connection `id`, through its worker's inbox (`ping`: see `Command::Send`).
    pub(crate) fn send_frame(&self, from: usize, id: ConnId, head: Bytes, tail: Bytes, ping: bool) {
        self.bus.to_connection(from, id, Envelope::Send { id, head, tail, ping });
    }

    /// A data frame (text or binary) for connection `id`, through its worker's inbox.
    pub(crate) fn send_data(&self, from: usize, id: ConnId, text: bool, payload: Bytes) {
        let (head, tail) = encode_data_frame(text, payload);
        self.send_frame(from, id, head, tail, false);
    }

    /// The close handshake of connection `id`, through its worker's inbox.
    pub(crate) fn close(&self, from: usize, id: ConnId, code: CloseCode, reason: &str) {
        self.bus.to_connection(from, id, Envelope::Close { id, code, reason: reason.to_owned() });
    }

    /// Encodes the frame once and hands it to every worker with subscribers of `topic`, except
    /// to the connection `except`.
    pub(crate) fn publish(&self, from: usize, topic: &str, text: bool, payload: Bytes, except: Option<ConnId>) {
        let (head, tail) = encode_data_frame(text, payload);
        self.bus.publish(from, topic, head, tail, except);
        self.count_publish(from);
    }

    /// Encodes the frame once and hands it to every worker, for every open connection.
    pub(crate) fn broadcast(&self, from: usize, text: bool, payload: Bytes) {
        let (head, tail) = encode_data_frame(text, payload);
        self.bus.broadcast(from, head, tail);
        self.count_publish(from);
    }

    /// The deferred HTTP response owed to connection `id`, through its worker's inbox.
    pub(crate) fn respond(&self, id: ConnId, response: Bytes) {
        self.bus.to_connection(NO_WORKER, id, Envelope::Respond { id, response });
    }

    fn count_publish(&self, from: usize) {
        // Only a worker writes its own counters: `NO_WORKER` finds none and counts nothing.
        if let Some(metrics) = self.metrics.get(from) {
            metrics.publishes.add(1);
        }
    }
}
