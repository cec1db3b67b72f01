//! permessage-deflate in the loop: the worker's one compressor and one inflater, each
//! connection's mode (fixed at its upgrade), and the compressed forms of outgoing frames.
//!
//! Owns: `Deflate` (the worker's compression state and settings), `Compression` (a connection's
//! mode) and `Deflate::outgoing`, the form a direct send takes. A leaf: it knows no worker (the
//! worker holds a `Deflate`). Must not: keep anything per connection but its one-byte mode.
//! Invariants: a frame is compressed at most once per worker: a publish once for all the
//! compressed subscribers of its topic (and not at all without one), a broadcast once for all
//! the worker's compressed connections (whenever compression is on: broadcasts are rare), each
//! compression counted in `compressions`; a message shorter than the threshold, or one that
//! deflate does not shorten, goes as its plain frame, RSV1 clear; control frames are never
//! compressed.

use bytes::Bytes;

use crate::config::Config;
use crate::metrics::WorkerMetrics;
use crate::proto::deflate::{Agreement, Compressor, Inflater};
use crate::proto::frame::{data_frame_payload, encode_compressed_frame};
use crate::pubsub::{Batch, Compressed};

/// A connection's permessage-deflate mode, chosen at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Compression {
    /// Not negotiated: RSV1 from the peer is a protocol error.
    #[default]
    Off,
    /// Negotiated, but the client limited the server's window below the compressor's
    /// (`server_max_window_bits`): its compressed messages are inflated, and it is sent plain
    /// frames only.
    Inflate,
    /// Negotiated both ways.
    On,
}

impl Compression {
    /// The mode an agreement (or none) gives.
    pub(crate) fn of(agreement: Option<&Agreement>) -> Compression {
        match agreement {
            None => Compression::Off,
            Some(a) if a.server_compresses() => Compression::On,
            Some(_) => Compression::Inflate,
        }
    }

    /// The peer may send compressed messages (RSV1).
    pub(crate) fn inflates(self) -> bool {
        self != Compression::Off
    }

    /// The peer takes compressed messages.
    pub(crate) fn compresses(self) -> bool {
        self == Compression::On
    }
}

/// The compression settings of `Config`, for each worker to make its `Deflate` from.
pub(crate) struct DeflateSettings {
    enabled: bool,
    threshold: usize,
    level: u32,
}

impl DeflateSettings {
    pub(crate) fn new(config: &Config) -> DeflateSettings {
        DeflateSettings {
            enabled: config.compression,
            threshold: config.compression_threshold,
            level: config.compression_level,
        }
    }
}

/// A worker's compression state: one compressor and one inflater for all its connections.
pub(crate) struct Deflate {
    /// `Config::compression`: offers are negotiated only when set.
    pub(crate) enabled: bool,
    threshold: usize,
    compressor: Compressor,
    pub(crate) inflater: Inflater,
    /// The compressed twin of the worker's broadcast batch, for its compressed connections.
    pub(crate) broadcast: Batch,
}

impl Deflate {
    pub(crate) fn new(settings: &DeflateSettings) -> Deflate {
        Deflate {
            enabled: settings.enabled,
            threshold: settings.threshold,
            compressor: Compressor::new(settings.level),
            inflater: Inflater::new(),
            broadcast: Batch::default(),
        }
    }

    /// The compressed frame for a plain data frame (`head` and `tail`, as the bus carries it),
    /// or `None` when it goes plain: below the threshold, not shortened, or not a data frame.
    pub(crate) fn compress(&mut self, head: &Bytes, tail: &Bytes, metrics: &WorkerMetrics) -> Compressed {
        let (text, payload) = data_frame_payload(head, tail)?;
        if payload.len() < self.threshold {
            return None;
        }
        let compressed = self.compressor.compress(&payload)?;
        metrics.compressions.add(1);
        (compressed.len() < payload.len()).then(|| encode_compressed_frame(text, compressed))
    }

    /// The frame a direct send (application data, not a ping) puts on the queue of a
    /// connection in `mode`: compressed if it takes compressed messages and `compress` makes one.
    pub(crate) fn outgoing(
        &mut self,
        mode: Compression,
        head: Bytes,
        tail: Bytes,
        metrics: &WorkerMetrics,
    ) -> (Bytes, Bytes) {
        if !mode.compresses() {
            return (head, tail);
        }
        self.compress(&head, &tail, metrics).unwrap_or((head, tail))
    }
}
