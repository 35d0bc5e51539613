//! Fault tests with real processes on the real stack (issue 21): Mailroom runs as `mailroom
//! serve` processes, and a test kills, pauses or starves them, or PostgreSQL, Redis, the
//! broker or a mail server, then counts what was lost and what was doubled (each must be 0)
//! and prints the time to recover. One binary, run serially by `.ci/chaos` (which builds
//! `mailroom` first); `.ci/test` leaves it out. Logs of each run's processes are kept under
//! `.stack/chaos/<test>-<id>/`.

mod broker_outage;
mod common;
mod mail_server_outage;
mod outbox_latency;
mod paused_worker;
mod postgres_restart;
mod redis_outage;
mod worker_killed;
