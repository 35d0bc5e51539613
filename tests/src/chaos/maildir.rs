//! Large mailboxes on the stack's Dovecot in seconds: sample messages written straight into
//! a user's maildir (to `tmp/`, then renamed into `new/`, as a delivery agent does), which
//! Dovecot picks up and numbers on its next look at the folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The maildir of Dovecot user `user` (next to the users file `.ci/stack.sh` names).
pub fn maildir_of(user: &str) -> PathBuf {
    let users = std::env::var("MAILROOM_DOVECOT_USERS")
        .expect("MAILROOM_DOVECOT_USERS is set by .ci/stack.sh");
    Path::new(&users)
        .parent()
        .expect("the users file has a folder")
        .join("mail")
        .join(user)
}

/// Delivers sample messages `from..to` (numbered as `mailroom_sync::demo::message` numbers
/// them) to `user`'s INBOX. Returns the maildir.
pub fn deliver(user: &str, from: usize, to: usize) -> PathBuf {
    let root = maildir_of(user);
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).expect("create the maildir");
    }
    let pid = std::process::id();
    for n in from..to {
        let (raw, date) = mailroom_sync::demo::message(n, user);
        let name = format!("{}.M{n}P{pid}.chaos,S={}", date.timestamp(), raw.len());
        let tmp = root.join("tmp").join(&name);
        std::fs::write(&tmp, &raw).expect("write a message");
        std::fs::rename(&tmp, root.join("new").join(&name)).expect("deliver a message");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let status = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(&root)
            .status()
            .expect("chown");
        assert!(status.success(), "chown of {}", root.display());
    }
    root
}
