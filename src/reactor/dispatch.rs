//! From received bytes to the service: each phase's bytes go to the `proto` parser for that
//! phase, and what comes back (a request, an event, a violation) is acted on here.
//!
//! Owns: `process` (the phase switch over one read's bytes) and the handling of receiver events.
//! Must not: decode frame headers or check frames itself; `proto::Receiver` does that.
//! Invariant: after a connection stops being open, its frames are still read (so the peer's
//! close is seen) but nothing is answered: data is dropped (§5.5.1: no more data after a close
//! frame) and a ping gets no pong once our close frame is queued.

use bytes::{Bytes, BytesMut};

use super::connection::Phase;
use super::read_buf::ReadBuf;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::proto::frame::{encode_frame, OpCode, RSV1};
use crate::proto::{CloseCode, Event, FrameRules, Status};

impl<S: Service> Worker<S> {
    /// Hands the received bytes to proto, phase by phase, and acts on what comes back.
    pub(super) fn process(&mut self, id: ConnId, buf: &mut ReadBuf) {
        let mut data = buf.take_filled();
        loop {
            let Some(conn) = get(&mut self.conns, id) else {
                data.clear();
                break;
            };
            let more = match conn.phase {
                Phase::Handshake if conn.awaiting => {
                    self.hold(id, &mut data);
                    false
                }
                Phase::Handshake => self.receive_request(id, &mut data),
                Phase::Open | Phase::CloseSent => self.receive_frames(id, &mut data),
                Phase::Lingering | Phase::HalfClosed => {
                    data.clear();
                    false
                }
            };
            if !more {
                break;
            }
        }
        buf.give_back(data);
    }

    /// Feeds `data` to the connection's receiver and acts on one event. Returns whether to go on.
    fn receive_frames(&mut self, id: ConnId, data: &mut BytesMut) -> bool {
        let Some(conn) = get(&mut self.conns, id) else {
            return false;
        };
        // permessage-deflate gives RSV1 its meaning, and the worker's inflater reads it.
        let inflated = self.deflate.inflater.inflated();
        let (rules, inflater) = if conn.compression.inflates() {
            (FrameRules { allowed_rsv: RSV1, ..self.limits.frame_rules }, Some(&mut self.deflate.inflater))
        } else {
            (self.limits.frame_rules, None)
        };
        match conn.receiver.receive(data, &rules, self.limits.max_message, inflater) {
            Ok(Status::Partial) => false,
            Ok(Status::Complete(event)) => {
                self.metrics.decompressions.add(self.deflate.inflater.inflated() - inflated);
                self.on_event(id, event);
                true
            }
            Err(e) => {
                self.fail(id, e);
                data.clear();
                false
            }
        }
    }

    fn on_event(&mut self, id: ConnId, event: Event) {
        match event {
            Event::Text(payload) => self.deliver(id, true, payload),
            Event::Binary(payload) => self.deliver(id, false, payload),
            Event::Ping(payload) => {
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                // response ... [with] identical Application data".
                // Pongs count against the queue cap like data: a client that pings without
                // reading must not grow our memory.
                self.queue_data(id, encode_frame(OpCode::Pong, &payload), Bytes::new(), false);
            }
            Event::Pong(_) => {}
            Event::Close(close) => {
                // §5.5.1: "If an endpoint receives a Close frame and did not previously send a
                // Close frame, the endpoint MUST send a Close frame in response" (echoing the code).
                let (code, reason) = close.as_ref().map_or((CloseCode::NO_STATUS, ""), |c| (c.code, c.reason_str()));
                self.close_and_linger(id, code, reason);
            }
        }
    }

    fn deliver(&mut self, id: ConnId, text: bool, payload: Bytes) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        // After our close frame, data is read and dropped (§5.5.1: no more data frames).
        let (Phase::Open, Some(session)) = (conn.phase, conn.session.as_mut()) else {
            return;
        };
        self.metrics.messages_in.add(1);
        self.service.message(&mut self.io, id, session, text, payload);
        self.apply_commands();
    }
}
