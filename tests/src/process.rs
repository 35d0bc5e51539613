//! Processes a test runs beside itself: waiting for one to listen on its port, and finding
//! the `mailroom` binary the process tests run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Waits until something accepts TCP connections on `127.0.0.1:port`; panics naming `what`
/// when nothing does within `timeout`.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary under test: `MAILROOM_BIN`, else `mailroom` in the target folder this test
/// executable was built into (`target/debug/deps/all-<hash>` → `target/debug/mailroom`).
pub fn mailroom_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MAILROOM_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target folder")
        .join("mailroom");
    assert!(
        bin.is_file(),
        "{} is missing: these tests run the real binary; build it first with `cargo build -p mailroom` (or name one in MAILROOM_BIN)",
        bin.display()
    );
    bin
}
