//! The fault tests' harness (`tests/tests/chaos`, run by `.ci/chaos`): Mailroom as real
//! `mailroom serve` processes, and the parts they depend on as processes a test may kill,
//! pause and bring back.
//!
//! - [`Proc`]: one child process with its output in a file under `.stack/chaos/`, killed with
//!   SIGKILL, paused with SIGSTOP and resumed with SIGCONT, started again with the same
//!   command;
//! - [`infra`]: a private PostgreSQL (`initdb` on a free port, `pg_ctl stop -m immediate`),
//!   a private Redis, a private tansu, and [`infra::Front`], a TCP front of a mail server
//!   that forwards (optionally throttled), refuses (nothing listens) or holds connections as
//!   a tarpit;
//! - [`cluster`]: the five services configured by environment for one test's database,
//!   Redis, broker and topic prefix, and clients and helpers to drive them;
//! - [`topic`]: reading a topic from its start, and the sync feed's messages;
//! - [`maildir`]: large mailboxes written straight into the stack's Dovecot.
//!
//! Every process and directory of a test lives under `.stack/chaos/<test>-<id>/`; each
//! process's stderr is in `<name>.log` there, kept after the test for diagnosis.

pub mod cluster;
pub mod infra;
pub mod maildir;
pub mod topic;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace's root (this crate's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A fresh folder for one test under `.stack/chaos/` (kept afterwards, for its logs).
pub fn test_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join(".stack").join("chaos").join(format!(
        "{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).expect("create the test's folder under .stack/chaos");
    dir
}

pub use crate::free_port;

/// The `mailroom` binary: `MAILROOM_BIN`, else the one next to this test executable
/// (`target/debug/mailroom`, which `.ci/chaos` builds first with `cargo build -p mailroom`).
pub fn mailroom_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("MAILROOM_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/debug/deps/chaos-<hash> → target/debug/mailroom
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("mailroom"))
        .expect("the target folder");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p mailroom`; .ci/chaos does)",
        bin.display()
    );
    bin
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid this harness started; no memory is shared.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// One child process of a test, its stdout and stderr appended to `log`.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub log: PathBuf,
    child: Option<Child>,
    /// When it was last (re)started.
    pub started_at: Instant,
}

impl Proc {
    /// Starts `program args` with exactly `env` (plus PATH and HOME) and its output in `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        let mut proc = Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            log,
            child: None,
            started_at: Instant::now(),
        };
        proc.start();
        proc
    }

    fn start(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the process's log");
        let err = out.try_clone().expect("clone the log handle");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(
                ["PATH", "HOME", "LANG"]
                    .into_iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        self.started_at = Instant::now();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How it ended, if it did.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process is frozen where it is (its sockets stay open, nothing answers).
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// SIGTERM (an orderly stop), waiting up to `grace` before SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Kills it (if running) and starts the same command again.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// The last `lines` lines of its log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A paused process must be able to die.
            signal(pid, libc::SIGCONT);
        }
        self.kill();
    }
}

/// Polls `check` every `every` until it gives `Some`, or panics after `timeout` naming `what`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(every).await;
    }
}

/// Prints one line of a test's figures, prefixed so `.ci/chaos` output is easy to grep.
pub fn report(test: &str, line: impl std::fmt::Display) {
    println!("[chaos] {test}: {line}");
}
