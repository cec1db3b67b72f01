//! A throwaway `redis-server` for the cluster tests, and a raw RESP client to drive it.
//!
//! Owns: starting `redis-server` on a free loopback port with no persistence (so a restart
//! loses the data, as a real crash of a cache-only Redis does), waiting until it answers PING
//! over RESP (never a fixed sleep), SIGKILL, SIGSTOP/SIGCONT, a restart on the same port, and a
//! kill on Drop. A missing `redis-server` fails the test with how to install it: the cluster
//! tests never skip.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fresh `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Sends one command (as an array of bulk strings) on `stream`.
pub fn write_command(stream: &mut TcpStream, args: &[&str]) -> std::io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)
}

/// Reads one reply.
pub fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
    let (kind, rest) = line.split_at(1.min(line.len()));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut body = vec![0; len as usize + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len as usize);
                Resp::Bulk(Some(body))
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Resp::Array(None)
            } else {
                Resp::Array(Some((0..len).map(|_| read_reply(reader)).collect::<Result<_, _>>()?))
            }
        }
        _ => return Err(bad()),
    })
}

/// One command on a fresh connection to `port`: its reply.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write_command(&mut stream, args)?;
    read_reply(&mut BufReader::new(stream))
}

/// A free loopback port: bound to port 0, read back, released.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` child on a loopback port, killed when dropped.
pub struct Redis {
    port: u16,
    child: Option<Child>,
    /// What the server printed, for the message of a failed start.
    said: Arc<Mutex<Vec<String>>>,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts a server on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> Redis {
        let mut redis = Redis { port, child: None, said: Arc::default() };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let spawned = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the cluster tests need it (scripts/test.sh installs it: \
                 apt-get install -y redis-server)"
            ),
            Err(e) => panic!("redis-server: {e}"),
        };
        let stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let said = Arc::clone(&self.said);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                said.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if matches!(command(self.port, &["PING"]), Ok(Resp::Simple(ref s)) if s == "PONG") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server on port {} exited ({status}); it said:\n{}", self.port, self.said());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; it said:\n{}",
                self.port,
                self.said()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn said(&self) -> String {
        self.said.lock().unwrap().join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (no goodbye, no save) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port (the data is gone: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGSTOP (`pause`) or SIGCONT (`resume`): a server that keeps its sockets but answers nothing.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id().to_string();
        let status = Command::new("kill").args(["-s", name, &pid]).status().unwrap();
        assert!(status.success(), "kill -s {name} {pid}");
    }

    /// One command; panics when the server cannot be reached.
    pub fn cmd(&self, args: &[&str]) -> Resp {
        command(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `PUBLISH channel message`.
    pub fn publish(&self, channel: &str, message: &str) {
        let reply = self.cmd(&["PUBLISH", channel, message]);
        assert!(matches!(reply, Resp::Int(_)), "PUBLISH: {reply:?}");
    }

    /// `FLUSHALL`: Redis loses every key, as after a restart without persistence.
    pub fn flushall(&self) {
        assert_eq!(self.cmd(&["FLUSHALL"]), Resp::Simple("OK".into()));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
