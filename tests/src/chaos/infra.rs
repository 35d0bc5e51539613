//! The parts Mailroom depends on, as processes of a test's own that it may kill and bring
//! back: PostgreSQL, Redis and tansu on free ports under the test's folder, and [`Front`], a
//! TCP front of a mail server that forwards, refuses or holds connections as a tarpit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{free_port, Proc};
use crate::postgres_process::{
    give_to_postgres, initdb, pg_ctl_start, postgres_bin, run_as_postgres,
    stop_immediate_and_remove,
};
use crate::wait_for_port;

/// A PostgreSQL server of the test's own (`initdb` into `<dir>/pg`), on a free port.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// Initialises a cluster under `dir` and starts it with a database `mailroom`.
    pub fn start(dir: &Path) -> Self {
        let bin = postgres_bin();
        let dir = dir.join("pg");
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL folder");
        give_to_postgres(&dir);
        initdb(&bin, &dir.join("data"));
        let pg = Self {
            bin,
            dir,
            port: free_port(),
        };
        pg.start_again();
        let status = Command::new("psql")
            .args(["-q", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
            .args(["-U", "postgres", "-c", "CREATE DATABASE mailroom"])
            .status()
            .expect("psql");
        assert!(status.success(), "create the database");
        pg
    }

    /// Starts the server (after [`PrivatePostgres::stop_immediate`]): it recovers from its WAL.
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        pg_ctl_start(&self.bin, &data, &log, &options);
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once, no checkpoint (a crash).
    pub fn stop_immediate(&self) {
        let data = self.dir.join("data");
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("UTF-8 path"),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }

    /// The URL of its database `mailroom`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/mailroom", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        stop_immediate_and_remove(&self.bin, &self.dir.join("data"));
    }
}

/// A Redis server of the test's own, on a free port, without persistence (a restart
/// forgets every key, as a failed-over cache would).
pub struct PrivateRedis {
    pub port: u16,
    pub proc: Proc,
}

impl PrivateRedis {
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let port_text = port.to_string();
        let dir_text = dir.to_string_lossy().into_owned();
        let proc = Proc::spawn(
            "redis",
            Path::new("redis-server"),
            &[
                "--port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir_text,
            ],
            Vec::new(),
            dir.join("redis.log"),
        );
        wait_for_port(port, "redis-server", Duration::from_secs(10));
        Self { port, proc }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server is gone, connections are reset.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.proc.restart();
        wait_for_port(self.port, "redis-server", Duration::from_secs(10));
    }
}

/// A tansu broker of the test's own, on a free port. Its storage is in memory (this tansu
/// build offers memory and S3 only), so it is paused rather than killed when a test needs
/// its topics afterwards.
pub struct PrivateBroker {
    pub port: u16,
    pub proc: Proc,
}

impl PrivateBroker {
    pub fn start(dir: &Path) -> Self {
        let bin = std::env::var("TANSU_BIN").expect("TANSU_BIN is set by .ci/stack.sh");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let proc = Proc::spawn(
            "tansu",
            Path::new(&bin),
            &[
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ],
            Vec::new(),
            dir.join("tansu.log"),
        );
        wait_for_port(port, "tansu", Duration::from_secs(10));
        Self { port, proc }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// What a [`Front`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontMode {
    /// Forwards to the target; the target's bytes at most `bytes_per_sec` (0: no limit).
    Forward { bytes_per_sec: u64 },
    /// Nothing listens: connections are refused, and those open are cut.
    Closed,
    /// Accepts and then sends `* OK` every `every` (never, when zero) and nothing else,
    /// reading and ignoring whatever the client sends.
    Tarpit { every: Duration },
    /// Forwards until the target has sent `after_bytes` on a connection (and the line under
    /// way), then holds it: a server that hangs in the middle of an answer, sending an
    /// unsolicited `* 1 FETCH (FLAGS (\Seen))` every `every` — an answer that is progress to
    /// a reader's timeout but no message.
    Stall { after_bytes: u64, every: Duration },
}

/// A TCP front of a server on a fixed loopback port, whose behaviour a test switches: the
/// server as it is, a throttled link, a server that went away, a tarpit.
pub struct Front {
    pub port: u16,
    target: SocketAddr,
    mode: FrontMode,
    state: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Front {
    pub async fn start(target: SocketAddr, mode: FrontMode) -> Self {
        let mut front = Self {
            port: free_port(),
            target,
            mode: FrontMode::Closed,
            state: Arc::new(Mutex::new(Vec::new())),
        };
        front.set(mode).await;
        front
    }

    pub fn mode(&self) -> FrontMode {
        self.mode
    }

    /// Switches behaviour: every open connection is cut, and the port listens (or not) anew.
    pub async fn set(&mut self, mode: FrontMode) {
        for task in self.state.lock().expect("front state").drain(..) {
            task.abort();
        }
        self.mode = mode;
        if mode == FrontMode::Closed {
            // Let the aborted listener close its socket before anyone connects.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("the front cannot listen on {} again: {e}", self.port),
            }
        };
        let target = self.target;
        let tasks = self.state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let conn = tokio::spawn(serve(client, target, mode));
                let mut tasks = tasks.lock().expect("front state");
                tasks.retain(|t| !t.is_finished());
                tasks.push(conn);
            }
        });
        self.state.lock().expect("front state").push(accept);
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.state.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

async fn serve(mut client: TcpStream, target: SocketAddr, mode: FrontMode) {
    match mode {
        FrontMode::Closed => {}
        FrontMode::Tarpit { every } => {
            let (mut read, mut write) = client.split();
            let drain = async {
                let mut buf = [0u8; 4096];
                while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
                // The client closed: hold our side anyway, as a hung server would.
                std::future::pending::<()>().await
            };
            let trickle = async {
                if every.is_zero() {
                    return std::future::pending::<()>().await;
                }
                loop {
                    tokio::time::sleep(every).await;
                    if write.write_all(b"* OK still here\r\n").await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                }
            };
            tokio::join!(drain, trickle);
        }
        FrontMode::Stall { after_bytes, every } => {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                std::future::pending::<()>().await
            };
            let down = async {
                let mut buf = vec![0u8; 4096];
                let mut sent: u64 = 0;
                while sent < after_bytes {
                    let want = buf.len().min((after_bytes - sent) as usize);
                    let n = match server_read.read(&mut buf[..want]).await {
                        Ok(0) | Err(_) => return std::future::pending::<()>().await,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                    sent += n as u64;
                }
                // Up to the end of the line under way, so what follows is a line of its own.
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return std::future::pending::<()>().await,
                        Ok(n) => n,
                    };
                    let end = buf[..n].iter().position(|b| *b == b'\n').map(|i| i + 1);
                    let upto = end.unwrap_or(n);
                    if client_write.write_all(&buf[..upto]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                    if end.is_some() {
                        break;
                    }
                }
                loop {
                    tokio::time::sleep(every.max(Duration::from_millis(10))).await;
                    let line = b"* 1 FETCH (FLAGS (\\Seen))\r\n";
                    if client_write.write_all(line).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                }
            };
            tokio::join!(up, down);
        }
        FrontMode::Forward { bytes_per_sec } => {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                let _ = server_write.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 16 * 1024];
                let started = Instant::now();
                let mut sent: u64 = 0;
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                    if bytes_per_sec > 0 {
                        // Keep the average at the rate: sleep until `sent` bytes are due.
                        let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
                        let elapsed = started.elapsed();
                        if due > elapsed {
                            tokio::time::sleep(due - elapsed).await;
                        }
                    }
                }
                let _ = client_write.shutdown().await;
            };
            tokio::join!(up, down);
        }
    }
}
