//! Running PostgreSQL's own programs for a server of a test's own ([`crate::chaos::infra`]'s
//! private one, [`crate::tls_stack`]'s TLS-only one): finding the installed binaries,
//! `initdb` into a fresh folder, `pg_ctl start` and an immediate stop, each as the `postgres`
//! user when the test runs as root (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process runs as root.
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `program` as the `postgres` user when this process is root, else as
/// ourselves.
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs a PostgreSQL program (see [`as_postgres`]); panics with its output when it fails.
pub(crate) fn run_as_postgres(program: &Path, args: &[&str]) {
    let output = as_postgres(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The newest installed PostgreSQL's `bin` folder (`/usr/lib/postgresql/<version>/bin`).
pub(crate) fn postgres_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (.ci/stack.sh)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .max_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Hands `dir` (and all below it) to the `postgres` user when this process is root.
pub(crate) fn give_to_postgres(dir: &Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown of {}", dir.display());
    }
}

/// `initdb` of a cluster into `data`: trust, superuser `postgres`, UTF-8, no fsync.
pub(crate) fn initdb(bin: &Path, data: &Path) {
    run_as_postgres(
        &bin.join("initdb"),
        &[
            "-D",
            data.to_str().expect("UTF-8 path"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
    );
}

/// `pg_ctl start -w` of the cluster in `data`, logging to `log`, with server `options`.
pub(crate) fn pg_ctl_start(bin: &Path, data: &Path, log: &Path, options: &str) {
    run_as_postgres(
        &bin.join("pg_ctl"),
        &[
            "-D",
            data.to_str().expect("UTF-8 path"),
            "-l",
            log.to_str().expect("UTF-8 path"),
            "-w",
            "-o",
            options,
            "start",
        ],
    );
}

/// `pg_ctl stop -m immediate` of the cluster in `data` when it runs, ignoring any failure
/// (for `Drop`), then removes `data` (the log beside it is kept).
pub(crate) fn stop_immediate_and_remove(bin: &Path, data: &Path) {
    if data.join("postmaster.pid").exists() {
        let _ = as_postgres(&bin.join("pg_ctl"))
            .args(["-D", &data.to_string_lossy(), "-m", "immediate", "stop"])
            .output();
    }
    let _ = std::fs::remove_dir_all(data);
}
