//! What the sync fault tests share: one mailbox on the stack's Dovecot behind a [`Front`],
//! connected through the registry of a cluster of `mailroom serve` processes, and the
//! look-ups that compare the index with the server and find who holds the mailbox's lease.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mailroom_platform::types::MailboxId;
use mailroom_tests::chaos::cluster::{Cluster, Deps, Org};
use mailroom_tests::chaos::infra::{Front, FrontMode};
use mailroom_tests::chaos::{maildir, test_dir};
use mailroom_tests::mailstore::{
    indexed_messages, new_mail_user, server_messages, MailUser, MessageKey,
};
use mailroom_tests::sync_pb as spb;
use sqlx::PgPool;

/// The stack's Dovecot (IMAP).
pub fn dovecot() -> SocketAddr {
    std::env::var("MAILROOM_IMAP_ADDR")
        .expect("MAILROOM_IMAP_ADDR is set by .ci/stack.sh")
        .parse()
        .expect("MAILROOM_IMAP_ADDR is host:port")
}

/// Who holds `mailbox`'s sync lease (`<host>-<pid>-<id>`), if anyone.
pub async fn lease_holder(redis_url: &str, mailbox: &str) -> Option<String> {
    let client = redis::Client::open(redis_url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(format!("mailroom:sync:lease:{mailbox}"))
        .query_async(&mut conn)
        .await
        .ok()?
}

/// A cluster, an organisation with one owner, and the owner's mailbox (`initial` messages
/// in its INBOX) behind a front, connected and waiting for its first sync.
pub struct SyncRig {
    pub cluster: Cluster,
    pub org: Org,
    pub user: MailUser,
    pub front: Front,
    pub mailbox: String,
    pub mailbox_id: MailboxId,
    pub index: PgPool,
}

/// Waits until Dovecot shows `count` messages in `user`'s INBOX (it numbers new maildir
/// files on first look, which takes a while for thousands).
pub async fn until_dovecot_has(user: &MailUser, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut imap = user.session().await;
        let exists = imap.examine("INBOX").await.expect("EXAMINE").exists;
        let _ = imap.logout().await;
        if exists >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Dovecot shows {exists} of {count} messages"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl SyncRig {
    /// Starts a cluster (`core` plus the sync processes `syncs`, tuned by `tuning`), makes
    /// the mailbox with `initial` messages and connects it through a front in `mode`.
    pub async fn start(
        test: &str,
        tuning: &[(&str, String)],
        syncs: &[(&str, &str)],
        in_crm: bool,
        initial: usize,
        mode: FrontMode,
    ) -> Self {
        let mut cluster = Cluster::new(test_dir(test), Deps::default()).await;
        for (key, value) in tuning {
            cluster.tune(key, value);
        }
        cluster.start_core_and_sync(syncs).await;
        let org = cluster.create_org().await;
        let owner = cluster
            .create_user(&org, "owner")
            .await
            .expect("create the owner");
        let user = new_mail_user();
        if initial > 0 {
            maildir::deliver(&user.username, 0, initial);
            until_dovecot_has(&user, initial as u32).await;
        }
        let front = Front::start(dovecot(), mode).await;
        let mailbox = cluster
            .connect_mailbox(&org, &owner.id, &user, front.port, in_crm)
            .await;
        let mailbox_id = MailboxId::parse("mailbox", &mailbox.id).expect("a mailbox id");
        let index = cluster.pool("sync").await;
        Self {
            cluster,
            org,
            user,
            front,
            mailbox: mailbox.id,
            mailbox_id,
            index,
        }
    }

    /// Rows in the index for this mailbox.
    pub async fn indexed(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE mailbox_id = $1")
            .bind(self.mailbox_id)
            .fetch_one(&self.index)
            .await
            .unwrap_or(0)
    }

    /// Waits (polling every 20 ms) until the index holds at least `n` rows of this mailbox.
    pub async fn until_indexed_at_least(&self, n: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.indexed().await;
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the index reached {got} of {n} rows in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid in the holder name of this mailbox's sync lease (`<host>-<pid>-<id>`), if one
    /// holds it.
    pub async fn holder_pid(&self) -> Option<u32> {
        let holder = lease_holder(&self.cluster.redis_url, &self.mailbox).await?;
        let mut parts = holder.rsplitn(3, '-');
        let _id = parts.next()?;
        parts.next()?.parse().ok()
    }

    /// Waits until a worker holds this mailbox's lease and returns its process index.
    pub async fn holder(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(index) = self
                .holder_pid()
                .await
                .and_then(|pid| self.cluster.proc_with_pid(pid))
            {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "no worker of this cluster held the lease within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message of the mailbox on the server (read from Dovecot directly).
    pub async fn server(&self) -> BTreeSet<MessageKey> {
        let mut imap = self.user.session().await;
        let out = server_messages(&mut imap).await;
        let _ = imap.logout().await;
        out
    }

    /// Every message of the mailbox in the index (panics on a row held twice).
    pub async fn index(&self) -> BTreeSet<MessageKey> {
        indexed_messages(&self.index, self.mailbox_id).await
    }

    /// Waits until a sync that finished after `since` left the status OK with `count`
    /// messages indexed; returns how long that took from `from`.
    pub async fn until_synced(
        &self,
        since: DateTime<Utc>,
        count: i64,
        from: Instant,
        timeout: Duration,
    ) -> Duration {
        match self.synced_within(since, count, from, timeout).await {
            Ok(took) => took,
            Err(why) => panic!("{why}"),
        }
    }

    /// As [`SyncRig::until_synced`], saying why not instead of panicking.
    pub async fn synced_within(
        &self,
        since: DateTime<Utc>,
        count: i64,
        from: Instant,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        let since = since.timestamp();
        loop {
            let status = self.cluster.sync_status(&self.org, &self.mailbox).await;
            let indexed = self.indexed().await;
            let done = status.as_ref().is_ok_and(|s| {
                s.state == spb::SyncState::Ok as i32
                    && s.last_sync_time
                        .as_ref()
                        .is_some_and(|t| t.seconds >= since)
            });
            if done && indexed == count {
                return Ok(from.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no sync finished with {count} messages within {timeout:?} (index {indexed}, status {:?}, last error {:?})",
                    status.as_ref().map(|s| (s.state, s.last_sync_time.as_ref().map(|t| t.seconds), s.next_sync_time.as_ref().map(|t| t.seconds))),
                    status.as_ref().map(|s| s.last_error.clone()).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The INBOX checkpoint: (last_uid, uid_next, messages), and the row's transaction id.
    pub async fn checkpoint(&self) -> (i64, i64, i64, String) {
        sqlx::query_as(
            "SELECT last_uid, uid_next, messages, xmin::text FROM folders \
             WHERE mailbox_id = $1 AND name = 'INBOX'",
        )
        .bind(self.mailbox_id)
        .fetch_one(&self.index)
        .await
        .expect("the INBOX checkpoint")
    }

    /// Each indexed row's UID with the transaction that last wrote it: a write by anyone,
    /// even one that changes nothing visible, changes this.
    pub async fn row_versions(&self) -> BTreeSet<(i32, String)> {
        let rows: Vec<(i32, String)> =
            sqlx::query_as("SELECT uid, xmin::text FROM messages WHERE mailbox_id = $1")
                .bind(self.mailbox_id)
                .fetch_all(&self.index)
                .await
                .expect("read the index");
        rows.into_iter().collect()
    }
}

/// What differs between the server and the index: (lost: on the server, not indexed;
/// extra: indexed, not on the server).
pub fn compare(
    server: &BTreeSet<MessageKey>,
    index: &BTreeSet<MessageKey>,
) -> (Vec<MessageKey>, Vec<MessageKey>) {
    (
        server.difference(index).cloned().collect(),
        index.difference(server).cloned().collect(),
    )
}
