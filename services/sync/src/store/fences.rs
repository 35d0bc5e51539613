//! Fencing of a mailbox's writers: each holder of the mailbox's lease carries a generation
//! (the fencing token the lease's acquisition handed out, [`crate::lease::Leases::acquire`]),
//! claims it here before it reads the mailbox's state, and writes only in transactions begun
//! by [`begin`], which lock the mailbox's fence row and check it still names that generation.
//!
//! Invariant: once a holder's claim has committed, no transaction of an older generation
//! commits a write to the mailbox's folders, index or feed. The claim takes the row's lock
//! (an UPDATE) and a writer's check holds a share lock on it until its commit, so a write
//! either commits before the claim (and the new holder reads it) or sees the newer generation
//! and is refused ([`WriteError::Stale`]). Generations only grow: a claim of one not above
//! the stored one is refused, so two holders never share one. Nothing of this is in a
//! process's memory: a holder in another process, paused past its lease and resumed, is
//! refused the same way. A fenced transaction holds no wait on anything but PostgreSQL, and
//! one left idle (its process paused) is ended by the server after [`IDLE_IN_WRITE`], so its
//! lock never holds a newer holder's claim up for longer. A disconnected mailbox's fence is
//! moved on ([`super::schedule::forget_mailbox`]): a sync under way then writes nothing more.

use mailroom_types::MailboxId;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// How long a fenced write transaction may sit idle (its process paused, say) before the
/// server ends it and frees its lock on the fence row.
pub const IDLE_IN_WRITE: &str = "10s";

/// A holder's right to write one mailbox: its generation, claimed with [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub mailbox: MailboxId,
    pub generation: i64,
}

/// A write refused because a newer holder claimed the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a newer holder of mailbox {mailbox}'s lease took over, or the mailbox was disconnected (this writer's generation {mine}, the mailbox's {current}); nothing more of this sync is written"
)]
pub struct Stale {
    pub mailbox: MailboxId,
    pub mine: i64,
    /// The generation the mailbox's fence names now (0: none, the mailbox is unknown).
    pub current: i64,
}

/// Why a fenced write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Stale(#[from] Stale),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed: writes with this fence are taken until a newer holder claims.
    Held(Fence),
    /// The mailbox's fence names `current`, not below the generation offered.
    Behind { current: i64 },
}

/// Claims `mailbox` for `generation`, if no holder of that generation or a newer one has.
pub async fn claim(pool: &PgPool, mailbox: MailboxId, generation: i64) -> sqlx::Result<Claim> {
    let claimed: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO mailbox_fences (mailbox_id, generation) VALUES ($1, $2) \
         ON CONFLICT (mailbox_id) DO UPDATE SET generation = EXCLUDED.generation, claimed_at = now() \
         WHERE mailbox_fences.generation < EXCLUDED.generation \
         RETURNING generation",
    )
    .bind(mailbox)
    .bind(generation)
    .fetch_optional(pool)
    .await?;
    if claimed.is_some() {
        return Ok(Claim::Held(Fence {
            mailbox,
            generation,
        }));
    }
    Ok(Claim::Behind {
        current: current(pool, mailbox).await?,
    })
}

/// Claims `mailbox` for the generation after the stored one: a writer that holds no lease
/// (a tool, a benchmark, a test) becomes the newest, and any lease holder before it is fenced.
pub async fn claim_next(pool: &PgPool, mailbox: MailboxId) -> sqlx::Result<Fence> {
    let (generation,): (i64,) = sqlx::query_as(
        "INSERT INTO mailbox_fences (mailbox_id, generation) VALUES ($1, 1) \
         ON CONFLICT (mailbox_id) DO UPDATE SET generation = mailbox_fences.generation + 1, claimed_at = now() \
         RETURNING generation",
    )
    .bind(mailbox)
    .fetch_one(pool)
    .await?;
    Ok(Fence {
        mailbox,
        generation,
    })
}

/// Moves the mailbox's fence past every claim so far (in the caller's transaction): the
/// holder under way writes nothing more; the next holder's claim lifts its counter past it.
pub async fn retire(conn: &mut PgConnection, mailbox: MailboxId) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE mailbox_fences SET generation = generation + 1, claimed_at = now() \
         WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .execute(conn)
    .await?;
    Ok(())
}

/// The generation the mailbox's fence names (0 when none was claimed).
pub async fn current(pool: &PgPool, mailbox: MailboxId) -> sqlx::Result<i64> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT generation FROM mailbox_fences WHERE mailbox_id = $1")
            .bind(mailbox)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(g,)| g).unwrap_or(0))
}

/// Checks, in the caller's transaction, that `fence` is still the mailbox's newest claim, and
/// holds the fence row's share lock until the transaction ends (a newer claim waits for it).
pub async fn check(conn: &mut PgConnection, fence: &Fence) -> Result<(), WriteError> {
    let held: Option<(i64,)> = sqlx::query_as(
        "SELECT generation FROM mailbox_fences WHERE mailbox_id = $1 AND generation = $2 FOR SHARE",
    )
    .bind(fence.mailbox)
    .bind(fence.generation)
    .fetch_optional(&mut *conn)
    .await?;
    if held.is_some() {
        return Ok(());
    }
    let now: Option<(i64,)> =
        sqlx::query_as("SELECT generation FROM mailbox_fences WHERE mailbox_id = $1")
            .bind(fence.mailbox)
            .fetch_optional(&mut *conn)
            .await?;
    Err(WriteError::Stale(Stale {
        mailbox: fence.mailbox,
        mine: fence.generation,
        current: now.map(|(g,)| g).unwrap_or(0),
    }))
}

/// A transaction for the mailbox's writes, begun with [`check`]: commit it for the writes to
/// count; a stale fence never gets one.
pub async fn begin(
    pool: &PgPool,
    fence: &Fence,
) -> Result<Transaction<'static, Postgres>, WriteError> {
    let mut tx = pool.begin().await?;
    // The idle limit is set by the check's own statement (one round trip, not two); where
    // the check finds no claim, the transaction is not used.
    let held: Option<(String,)> = sqlx::query_as(
        "SELECT set_config('idle_in_transaction_session_timeout', $3, true) \
         FROM mailbox_fences WHERE mailbox_id = $1 AND generation = $2 FOR SHARE",
    )
    .bind(fence.mailbox)
    .bind(fence.generation)
    .bind(IDLE_IN_WRITE)
    .fetch_optional(&mut *tx)
    .await?;
    if held.is_none() {
        // Refused (a newer claim); `check` says whose.
        check(&mut tx, fence).await?;
        sqlx::query(&format!(
            "SET LOCAL idle_in_transaction_session_timeout = '{IDLE_IN_WRITE}'"
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(tx)
}
