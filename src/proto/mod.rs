//! The sans-IO WebSocket protocol core (RFC 6455): bytes in, values out.
//!
//! Owns: HTTP/1.1 framing, the opening handshake (server and client side), frame codec, masking,
//! frame decoding, message assembly, permessage-deflate, close codes, and the PROXY protocol
//! header and `X-Forwarded-For` a trusted proxy hands the client address in.
//! Must not: touch sockets (`std::net`, mio), read a clock, log, or use any other module of this
//! crate. Every parser returns complete / need more (`Status::Partial`) / error, so the reactor
//! can feed it whatever a read returned. CI greps this directory to keep that true.

pub mod client;
pub mod close;
pub mod close_code;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod message;
pub mod proxy;
pub mod receiver;
pub mod status;

pub use close::CloseFrame;
pub use close_code::CloseCode;
pub use decoder::{decode_frame, Frame, FrameRules};
pub use error::ProtocolError;
pub use frame::{OpCode, Role};
pub use handshake::{Parsed, RequestError, RequestStatus, Upgrade};
pub use http::{HttpLimits, Request, Response};
pub use message::{Assembler, Event, Utf8Validator};
pub use proxy::{forwarded_client, parse_proxy_header, ProxyError, ProxyHeader};
pub use receiver::Receiver;
pub use status::Status;
