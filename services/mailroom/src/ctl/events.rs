//! `mailroom ctl events`: the operator's view of one service's event path — the dead letters
//! its consumers set aside (list, show one with its payload, ask for a replay) and the outbox
//! events its relay parked because the broker refused them for good (list, retry). Every
//! service hosts these operations over its own schema; `--service` says whose. They need the
//! operator's credential (`--client-id operator --client-secret …`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use mailroom_platform::proto::ops::v1 as opb;
use opb::event_ops_service_client::EventOpsServiceClient;
use serde_json::{json, Value};

use super::clients::ServiceToken;
use super::{Answer, Clients};
use crate::output::{short_name, time, Clock, Rows};

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Records a service's consumers could not apply: list, show, replay.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Outbox events the broker refused for good, set aside by the relay: list, retry.
    #[command(subcommand)]
    Parked(ParkedCommand),
}

/// Whose event path.
#[derive(Args)]
pub struct Service {
    /// The service whose dead letters or outbox to look at.
    #[arg(long, value_enum)]
    service: ServiceName,
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceName {
    Identity,
    Access,
    Mailboxes,
    Sync,
    Invitations,
}

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// Dead letters, oldest first: not applied yet, unless --include-replayed. Never their
    /// payload (see `show`).
    List {
        #[command(flatten)]
        service: Service,
        /// Only this consumer's (its consumer group, as the CONSUMER column shows it).
        #[arg(long, default_value = "")]
        consumer: String,
        /// Also those applied on replay.
        #[arg(long)]
        include_replayed: bool,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One dead letter, with its record key and payload (base64).
    Show {
        #[command(flatten)]
        service: Service,
        id: i64,
    },
    /// Ask the consumer to apply dead letters again: the ids given, or with --consumer every
    /// one of that consumer not applied yet. `list` shows how each replay went.
    Replay {
        #[command(flatten)]
        service: Service,
        /// Dead letter ids.
        #[arg(required_unless_present = "consumer", conflicts_with = "consumer")]
        ids: Vec<i64>,
        /// Every dead letter of this consumer not applied yet.
        #[arg(long)]
        consumer: Option<String>,
        /// Replay even dead letters received longer ago than the consumer keeps its record
        /// of applied events (refused otherwise: they may have been applied already).
        #[arg(long)]
        force: bool,
    },
    /// Mark dead letters as never to be applied (their effect was made another way, or must
    /// not happen): the later records of their keys, held behind them, are then applied.
    Discard {
        #[command(flatten)]
        service: Service,
        /// Dead letter ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

#[derive(Subcommand)]
pub enum ParkedCommand {
    /// Parked outbox events, oldest first, with the broker's last refusal.
    List {
        #[command(flatten)]
        service: Service,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Let the relay try parked events again (once the cause is fixed): the seqs given, or
    /// --all. One still refused is parked again after its attempts.
    Retry {
        #[command(flatten)]
        service: Service,
        /// Outbox seqs, as `list` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seqs: Vec<i64>,
        /// Every parked event.
        #[arg(long)]
        all: bool,
    },
}

type Ops = EventOpsServiceClient<
    tonic::service::interceptor::InterceptedService<mailroom_clients::PeerChannel, ServiceToken>,
>;

fn client(c: &Clients, service: &Service) -> Ops {
    match service.service {
        ServiceName::Identity => c.events.identity.clone(),
        ServiceName::Access => c.events.access.clone(),
        ServiceName::Mailboxes => c.events.mailboxes.clone(),
        ServiceName::Sync => c.events.sync.clone(),
        ServiceName::Invitations => c.events.invitations.clone(),
    }
}

fn replay_state(value: i32) -> String {
    short_name(
        opb::ReplayState::try_from(value)
            .ok()
            .map(|s| s.as_str_name()),
        "REPLAY_STATE_",
    )
}

const DEAD_LETTER_COLUMNS: [&str; 12] = [
    "id",
    "consumer",
    "topic",
    "partition",
    "offset",
    "event_type",
    "event_id",
    "error",
    "received",
    "replay",
    "replay_requested",
    "replay_error",
];

fn dead_letter_row(d: &opb::DeadLetter) -> Vec<Value> {
    vec![
        json!(d.id),
        json!(d.consumer),
        json!(d.topic),
        json!(d.partition),
        json!(d.offset),
        json!(d
            .event_type
            .strip_prefix("mailroom.events.v1.")
            .unwrap_or(&d.event_type)),
        json!(d.event_id),
        json!(d.error),
        json!(time(d.receive_time.as_ref(), Clock::Seconds)),
        json!(replay_state(d.replay_state)),
        json!(time(d.replay_request_time.as_ref(), Clock::Seconds)),
        json!(d.replay_error),
    ]
}

fn parked_row(p: &opb::ParkedEvent) -> Vec<Value> {
    vec![
        json!(p.seq),
        json!(p.topic),
        json!(p.record_key),
        json!(p
            .event_type
            .strip_prefix("mailroom.events.v1.")
            .unwrap_or(&p.event_type)),
        json!(p.event_id),
        json!(p.payload_size),
        json!(p.attempts),
        json!(p.last_error),
        json!(time(p.create_time.as_ref(), Clock::Seconds)),
        json!(time(p.park_time.as_ref(), Clock::Seconds)),
    ]
}

const PARKED_COLUMNS: [&str; 10] = [
    "seq",
    "topic",
    "key",
    "event_type",
    "event_id",
    "bytes",
    "attempts",
    "last_error",
    "created",
    "parked",
];

pub(crate) async fn run(c: &mut Clients, cmd: EventsCommand) -> anyhow::Result<Rows> {
    match cmd {
        EventsCommand::DeadLetters(cmd) => dead_letters(c, cmd).await,
        EventsCommand::Parked(cmd) => parked(c, cmd).await,
    }
}

async fn dead_letters(c: &mut Clients, cmd: DeadLettersCommand) -> anyhow::Result<Rows> {
    match cmd {
        DeadLettersCommand::List {
            service,
            consumer,
            include_replayed,
            page_size,
            page_token,
        } => {
            let page = client(c, &service)
                .list_dead_letters(c.request(opb::ListDeadLettersRequest {
                    consumer,
                    include_replayed,
                    page_size,
                    page_token,
                }))
                .await
                .answer()?;
            let mut rows = Rows::new("dead_letters", DEAD_LETTER_COLUMNS.to_vec());
            rows.rows = page.dead_letters.iter().map(dead_letter_row).collect();
            if !page.next_page_token.is_empty() {
                rows.footer = vec![("next_page_token", json!(page.next_page_token))];
            }
            Ok(rows)
        }
        DeadLettersCommand::Show { service, id } => {
            let d = client(c, &service)
                .get_dead_letter(c.request(opb::GetDeadLetterRequest { id }))
                .await
                .answer()?;
            let mut row = dead_letter_row(&d);
            row.extend([
                json!(time(d.replay_time.as_ref(), Clock::Seconds)),
                json!(d.org_id),
                json!(d.aggregate_id),
                json!(STANDARD.encode(&d.record_key)),
                json!(STANDARD.encode(&d.payload)),
            ]);
            let mut columns = DEAD_LETTER_COLUMNS.to_vec();
            columns.extend([
                "replayed",
                "org_id",
                "aggregate_id",
                "record_key_base64",
                "payload_base64",
            ]);
            Ok(Rows::one(columns, row))
        }
        DeadLettersCommand::Discard { service, ids } => {
            let answer = client(c, &service)
                .discard_dead_letters(c.request(opb::DiscardDeadLettersRequest { ids }))
                .await
                .answer()?;
            Ok(Rows::one(
                vec!["discarded", "ids"],
                vec![json!(answer.ids.len()), json!(answer.ids)],
            ))
        }
        DeadLettersCommand::Replay {
            service,
            ids,
            consumer,
            force,
        } => {
            let answer = client(c, &service)
                .replay_dead_letters(c.request(opb::ReplayDeadLettersRequest {
                    ids,
                    consumer: consumer.unwrap_or_default(),
                    force,
                }))
                .await
                .answer()?;
            Ok(Rows::one(
                vec!["replay_requested", "ids"],
                vec![json!(answer.ids.len()), json!(answer.ids)],
            ))
        }
    }
}

async fn parked(c: &mut Clients, cmd: ParkedCommand) -> anyhow::Result<Rows> {
    match cmd {
        ParkedCommand::List {
            service,
            page_size,
            page_token,
        } => {
            let page = client(c, &service)
                .list_parked_events(c.request(opb::ListParkedEventsRequest {
                    page_size,
                    page_token,
                }))
                .await
                .answer()?;
            let mut rows = Rows::new("parked_events", PARKED_COLUMNS.to_vec());
            rows.rows = page.parked_events.iter().map(parked_row).collect();
            if !page.next_page_token.is_empty() {
                rows.footer = vec![("next_page_token", json!(page.next_page_token))];
            }
            Ok(rows)
        }
        ParkedCommand::Retry { service, seqs, all } => {
            let answer = client(c, &service)
                .retry_parked_events(c.request(opb::RetryParkedEventsRequest { seqs, all }))
                .await
                .answer()?;
            Ok(Rows::one(
                vec!["retried", "seqs"],
                vec![json!(answer.seqs.len()), json!(answer.seqs)],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    #[test]
    fn a_dead_letter_lists_without_its_payload_in_table_and_json() {
        let letter = opb::DeadLetter {
            id: 7,
            consumer: "mailroom-access".into(),
            topic: "mailroom.identity.events".into(),
            partition: 3,
            offset: 42,
            event_id: "01900000-0000-7000-8000-000000000000".into(),
            event_type: "mailroom.events.v1.UserDismissed".into(),
            error: "unknown version".into(),
            replay_state: opb::ReplayState::Failed as i32,
            replay_error: "still unknown".into(),
            payload: b"secret personal data".to_vec(),
            ..Default::default()
        };
        let mut rows = Rows::new("dead_letters", DEAD_LETTER_COLUMNS.to_vec());
        rows.rows.push(dead_letter_row(&letter));
        let table = rows.render(Format::Table);
        assert!(
            table.contains("UserDismissed") && table.contains("FAILED"),
            "{table}"
        );
        let json: Value = serde_json::from_str(&rows.render(Format::Json)).unwrap();
        assert_eq!(json["kind"], "dead_letters");
        assert_eq!(json["items"][0]["replay"], "FAILED");
        assert_eq!(json["items"][0]["offset"], 42);
        let printed = format!("{table}{json}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
