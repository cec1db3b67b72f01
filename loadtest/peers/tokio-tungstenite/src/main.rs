//! A peer server for `fanout-load`: echo, broadcast to all, and the websocket-shootout protocol
//! on tokio + tokio-tungstenite, written the way that library's own examples are.
//!
//! `peer-tokio-tungstenite --mode echo|broadcast|shootout [--threads N] ADDR`
//!
//! Prints `peer-tokio-tungstenite (MODE): listening on ws://ADDR/` on stderr once bound (the real
//! port when ADDR asks for port 0). `--threads` sets the runtime's worker threads (default 1, so
//! that a comparison is one worker against one worker); the accept loop runs as a task on those
//! workers, not on the main thread. Messages up to 16 MiB, as in fanout's examples.
//!
//! - echo: every text or binary message goes back to its sender.
//! - broadcast: every message goes to every open connection, the sender included.
//! - shootout: `{"type":"echo","payload":X}` goes back as it came; `{"type":"broadcast",
//!   "payload":X}` sends `{"type":"broadcast","payload":X}` to everyone and then
//!   `{"type":"broadcastResult","payload":X}` to the sender.
//!
//! The registry of connections for broadcast is a `Mutex<HashMap<id, UnboundedSender>>`, as in
//! tokio-tungstenite's own chat example. Costs, per broadcast message to N connections: one lock,
//! N channel pushes (an atomic or two each, a block allocation every 32 messages per channel) and
//! N task wake-ups; the message itself is shared (tungstenite 0.30's `Message` holds `Bytes`, so a
//! clone is a refcount bump). Nothing is lost and memory is unbounded for a client that does not
//! read. The alternative, `tokio::sync::broadcast`, costs one push per message plus one receive
//! per connection, but a fixed-capacity ring: a receiver that falls behind by more than the
//! capacity loses messages (`RecvError::Lagged`), which the broadcast scenario would count as loss.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

const NAME: &str = "peer-tokio-tungstenite";
const MAX_MESSAGE: usize = 16 << 20;

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

/// Open connections for broadcast and shootout: id -> that connection's outgoing queue.
#[derive(Default)]
struct Registry {
    next_id: u64,
    peers: HashMap<u64, UnboundedSender<Message>>,
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
        tokio::spawn(async move {
            let _ = serve(stream, mode, registry).await;
        });
    }
}

async fn serve(stream: TcpStream, mode: Mode, registry: Shared) -> Result<(), WsError> {
    stream.set_nodelay(true)?;
    // Library defaults otherwise. Among them a 128 KiB read buffer, allocated at once for every
    // connection: this dominates the idle scenario's bytes per connection (~137 KB measured),
    // and `read_buffer_size` would trade it against read throughput.
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    match mode {
        Mode::Echo => echo(ws).await,
        Mode::Broadcast | Mode::Shootout => fan(ws, mode, registry).await,
    }
}

/// Reads whatever is already buffered before flushing, so K messages in flight cost one write,
/// not K (tungstenite buffers `feed`s until `flush`).
async fn echo(mut ws: WebSocketStream<TcpStream>) -> Result<(), WsError> {
    loop {
        let next = match ws.next().now_or_never() {
            Some(next) => next,
            None => {
                ws.flush().await?;
                ws.next().await
            }
        };
        match next {
            None => return Ok(()),
            Some(message) => {
                let message = message?;
                if message.is_text() || message.is_binary() {
                    ws.feed(message).await?;
                }
                // Pings are answered and closes completed by tungstenite itself.
            }
        }
    }
}

/// Broadcast and shootout: one task per connection, selecting between its socket and its queue.
async fn fan(mut ws: WebSocketStream<TcpStream>, mode: Mode, registry: Shared) -> Result<(), WsError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut r = registry.lock().unwrap();
        let id = r.next_id;
        r.next_id += 1;
        r.peers.insert(id, tx.clone());
        id
    };
    let result = async {
        loop {
            tokio::select! {
                next = ws.next() => match next {
                    None => return Ok(()),
                    Some(message) => {
                        let message = message?;
                        if message.is_text() || message.is_binary() {
                            match mode {
                                Mode::Shootout => shootout(&registry, &tx, message),
                                _ => broadcast(&registry, message),
                            }
                        }
                    }
                },
                Some(out) = rx.recv() => {
                    ws.feed(out).await?;
                    while let Ok(out) = rx.try_recv() {
                        ws.feed(out).await?;
                    }
                    ws.flush().await?;
                }
            }
        }
    }
    .await;
    registry.lock().unwrap().peers.remove(&id);
    result
}

fn broadcast(registry: &Shared, message: Message) {
    let r = registry.lock().unwrap();
    for peer in r.peers.values() {
        let _ = peer.send(message.clone());
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

fn shootout(registry: &Shared, me: &UnboundedSender<Message>, message: Message) {
    let Message::Text(text) = &message else {
        return;
    };
    let Ok(incoming) = serde_json::from_str::<Incoming<'_>>(text.as_str()) else {
        return;
    };
    match &*incoming.kind {
        "echo" => {
            let _ = me.send(message.clone());
        }
        "broadcast" => {
            let payload = incoming.payload.map_or("null", RawValue::get);
            let all = format!(r#"{{"type":"broadcast","payload":{payload}}}"#);
            let result = format!(r#"{{"type":"broadcastResult","payload":{payload}}}"#);
            broadcast(registry, Message::text(all));
            let _ = me.send(Message::text(result));
        }
        _ => {}
    }
}
