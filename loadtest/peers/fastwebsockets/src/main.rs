//! A peer server for `fanout-load`: echo, broadcast to all, and the websocket-shootout protocol
//! on tokio + hyper 1 + fastwebsockets, written the way fastwebsockets' own examples are (hyper
//! does the HTTP upgrade, `fastwebsockets::upgrade` checks it and hands over the socket).
//!
//! `peer-fastwebsockets --mode echo|broadcast|shootout [--threads N] ADDR`
//!
//! Prints `peer-fastwebsockets (MODE): listening on ws://ADDR/` on stderr once bound (the real
//! port when ADDR asks for port 0). `--threads` sets the runtime's worker threads (default 1, so
//! that a comparison is one worker against one worker); the accept loop runs as a task on those
//! workers, not on the main thread. Messages up to 16 MiB, as in fanout's examples.
//!
//! - echo: every text or binary message goes back to its sender (fastwebsockets'
//!   `echo_server.rs`: a `FragmentCollector`, one `write_frame` per message).
//! - broadcast: every message goes to every open connection, the sender included.
//! - shootout: `{"type":"echo","payload":X}` goes back as it came; `{"type":"broadcast",
//!   "payload":X}` sends `{"type":"broadcast","payload":X}` to everyone and then
//!   `{"type":"broadcastResult","payload":X}` to the sender.
//!
//! Broadcast and shootout split each socket: a reader task and a writer task that drains the
//! connection's queue into a `BufWriter` and flushes once the queue is empty (fastwebsockets
//! writes each frame straight to its stream, so without the buffer every frame would cost a
//! syscall). The registry of connections is a `Mutex<HashMap<id, UnboundedSender>>`. Costs, per
//! broadcast message to N connections: one lock, N channel pushes (an atomic or two each, a block
//! allocation every 32 messages per channel) and N task wake-ups; the payload is one `Bytes`
//! shared by all. Nothing is lost and memory is unbounded for a client that does not read. The
//! alternative, `tokio::sync::broadcast`, costs one push per message plus one receive per
//! connection, but a fixed-capacity ring: a receiver that falls behind by more than the capacity
//! loses messages (`RecvError::Lagged`), which the broadcast scenario would count as loss.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fastwebsockets::{
    upgrade, FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, WebSocketWrite,
};
use http_body_util::Empty;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncWrite, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

const NAME: &str = "peer-fastwebsockets";
const MAX_MESSAGE: usize = 16 << 20;
/// Write buffer of a broadcast connection: a few dozen small frames per syscall.
const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Echo,
    Broadcast,
    Shootout,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
            Mode::Shootout => "shootout",
        }
    }
}

struct Args {
    mode: Mode,
    threads: usize,
    addr: SocketAddr,
}

fn usage() -> String {
    format!("usage: {NAME} --mode echo|broadcast|shootout [--threads N] ADDR")
}

fn parse_args() -> Result<Args, String> {
    let mut mode = None;
    let mut threads = 1;
    let mut addr = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--mode" => {
                mode = Some(match value("--mode")?.as_str() {
                    "echo" => Mode::Echo,
                    "broadcast" => Mode::Broadcast,
                    "shootout" => Mode::Shootout,
                    other => return Err(format!("unknown mode {other:?}\n{}", usage())),
                })
            }
            "--threads" => {
                threads = value("--threads")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--threads wants a positive number\n{}", usage()))?
            }
            "-h" | "--help" => return Err(usage()),
            a if a.starts_with('-') => return Err(format!("unknown flag {a}\n{}", usage())),
            a => addr = Some(a.parse().map_err(|e| format!("{a}: {e}"))?),
        }
    }
    Ok(Args {
        mode: mode.ok_or_else(|| format!("--mode is required\n{}", usage()))?,
        threads,
        addr: addr.ok_or_else(|| format!("ADDR is required\n{}", usage()))?,
    })
}

/// What a connection's writer task sends.
enum Out {
    /// A whole message, its payload shared with every other connection that gets it.
    Data(OpCode, Bytes),
    /// A pong or close the reader owes the peer.
    Frame(Frame<'static>),
}

/// Open connections for broadcast and shootout: id -> that connection's outgoing queue.
#[derive(Default)]
struct Registry {
    next_id: u64,
    peers: HashMap<u64, UnboundedSender<Out>>,
}

type Shared = Arc<Mutex<Registry>>;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(args.addr).await?;
        eprintln!("{NAME} ({}): listening on ws://{}/", args.mode.name(), listener.local_addr()?);
        // On a worker, so the main thread only waits.
        tokio::spawn(accept_loop(listener, args.mode)).await.map_err(std::io::Error::other)?
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn accept_loop(listener: TcpListener, mode: Mode) -> std::io::Result<()> {
    let registry = Shared::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of descriptors or a connection reset before accept: keep serving the others.
            Err(e) => {
                eprintln!("{NAME}: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(serve_http(stream, mode, registry));
    }
}

async fn serve_http(stream: TcpStream, mode: Mode, registry: Shared) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle_request(req, mode, registry.clone()));
    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
}

async fn handle_request(
    mut req: Request<hyper::body::Incoming>,
    mode: Mode,
    registry: Shared,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    if !upgrade::is_upgrade_request(&req) {
        return Ok(status(StatusCode::UPGRADE_REQUIRED));
    }
    let (response, fut) = match upgrade::upgrade(&mut req) {
        Ok(r) => r,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    tokio::spawn(tokio::task::unconstrained(async move {
        let Ok(ws) = fut.await else {
            return;
        };
        let _ = match mode {
            Mode::Echo => echo(ws).await,
            Mode::Broadcast | Mode::Shootout => fan(ws, mode, registry).await,
        };
    }));
    Ok(response)
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

type Ws = fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

async fn echo(mut ws: Ws) -> Result<(), WebSocketError> {
    ws.set_max_message_size(MAX_MESSAGE);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

/// Broadcast and shootout: this task reads; a second one writes the connection's queue.
async fn fan(mut ws: Ws, mode: Mode, registry: Shared) -> Result<(), WebSocketError> {
    ws.set_max_message_size(MAX_MESSAGE);
    let (read, write) = ws.split(|io| {
        let (r, w) = tokio::io::split(io);
        (r, BufWriter::with_capacity(WRITE_BUFFER, w))
    });
    let mut read = FragmentCollectorRead::new(read);
    let (tx, rx) = mpsc::unbounded_channel();
    let id = {
        let mut r = registry.lock().unwrap();
        let id = r.next_id;
        r.next_id += 1;
        r.peers.insert(id, tx.clone());
        id
    };
    tokio::spawn(tokio::task::unconstrained(writer(write, rx)));
    let result = async {
        loop {
            let mut owed =
                |frame: Frame<'static>| std::future::ready(tx.send(Out::Frame(frame)).map_err(|_| "writer gone"));
            let frame = read.read_frame(&mut owed).await?;
            match frame.opcode {
                OpCode::Close => return Ok(()),
                OpCode::Text | OpCode::Binary => {
                    let opcode = frame.opcode;
                    let payload = match frame.payload {
                        Payload::Bytes(b) => b.freeze(),
                        Payload::Owned(v) => Bytes::from(v),
                        other => Bytes::copy_from_slice(&other),
                    };
                    match mode {
                        Mode::Shootout => shootout(&registry, &tx, opcode, payload),
                        _ => broadcast(&registry, opcode, &payload),
                    }
                }
                _ => {}
            }
        }
    }
    .await;
    // The writer ends once the last sender (ours and the registry's) is gone.
    registry.lock().unwrap().peers.remove(&id);
    result
}

/// Writes everything queued, then flushes once.
async fn writer<W: AsyncWrite + Unpin>(
    mut ws: WebSocketWrite<W>,
    mut queue: UnboundedReceiver<Out>,
) -> Result<(), WebSocketError> {
    while let Some(out) = queue.recv().await {
        write_out(&mut ws, out).await?;
        while let Ok(out) = queue.try_recv() {
            write_out(&mut ws, out).await?;
        }
        ws.flush().await?;
    }
    Ok(())
}

async fn write_out<W: AsyncWrite + Unpin>(ws: &mut WebSocketWrite<W>, out: Out) -> Result<(), WebSocketError> {
    match out {
        Out::Data(opcode, payload) => ws.write_frame(Frame::new(true, opcode, None, Payload::Borrowed(&payload))).await,
        Out::Frame(frame) => ws.write_frame(frame).await,
    }
}

fn broadcast(registry: &Shared, opcode: OpCode, payload: &Bytes) {
    let r = registry.lock().unwrap();
    for peer in r.peers.values() {
        let _ = peer.send(Out::Data(opcode, payload.clone()));
    }
}

#[derive(Deserialize)]
struct Command<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

fn shootout(registry: &Shared, me: &UnboundedSender<Out>, opcode: OpCode, payload: Bytes) {
    if opcode != OpCode::Text {
        return;
    }
    // Text frames arrive validated as UTF-8.
    let Ok(text) = std::str::from_utf8(&payload) else {
        return;
    };
    let Ok(command) = serde_json::from_str::<Command<'_>>(text) else {
        return;
    };
    match &*command.kind {
        "echo" => {
            let _ = me.send(Out::Data(OpCode::Text, payload.clone()));
        }
        "broadcast" => {
            let raw = command.payload.map_or("null", RawValue::get);
            let all = format!(r#"{{"type":"broadcast","payload":{raw}}}"#);
            let result = format!(r#"{{"type":"broadcastResult","payload":{raw}}}"#);
            broadcast(registry, OpCode::Text, &Bytes::from(all));
            let _ = me.send(Out::Data(OpCode::Text, Bytes::from(result)));
        }
        _ => {}
    }
}
