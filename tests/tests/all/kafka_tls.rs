//! Kafka over TLS with the properties an operator sets (`MAILROOM_KAFKA_PROPERTY_*`): Mailroom's
//! own producer and consumer reach a broker that speaks only TLS, with a CA the test makes
//! (and with a client certificate where the broker asks for one); a broker certificate from
//! another CA is refused, and the log says the certificate could not be verified; SASL
//! settings reach a broker that requires SCRAM, whose refusal the log names without the
//! password. Also: a topic with fewer partitions than configured is grown at start.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailroom_platform::kafka::{
    properties_from_env, KafkaProperties, KafkaSettings, Topic, Topics,
};
use mailroom_tests::kafka_tls::{SaslBroker, TestCa, TlsBroker};
use mailroom_tests::tls_stack::test_dir;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

/// Properties as the environment gives them (`MAILROOM_KAFKA_PROPERTY_<NAME>`).
fn from_env(vars: &[(&str, String)]) -> KafkaProperties {
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.clone()));
    let properties =
        KafkaProperties::new(properties_from_env(vars).expect("variables")).expect("allowed");
    properties
        .check()
        .expect("librdkafka accepts the properties");
    properties
}

/// `security.protocol=SSL` trusting the CA in `ca_file`, as the environment gives them.
fn tls_trusting(ca_file: &Path) -> KafkaProperties {
    from_env(&[
        ("MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SSL".into()),
        (
            "MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION",
            ca_file.display().to_string(),
        ),
    ])
}

fn settings(brokers: String, properties: KafkaProperties) -> KafkaSettings {
    KafkaSettings {
        brokers,
        idempotence: false,
        transactions: true,
        partitions: 1,
        replication: 1,
        topics: Topics::new(format!("test.tls.{}", uuid::Uuid::new_v4().simple())),
        properties,
    }
}

/// Sends one record with Mailroom's producer and reads it back with Mailroom's consumer.
async fn round_trip(kafka: &KafkaSettings) {
    kafka
        .ensure_topics(&[Topic::IdentityEvents])
        .await
        .expect("topic created over TLS");
    let topic = kafka.topics.name(Topic::IdentityEvents);
    let producer = kafka.producer().expect("producer");
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("over tls"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(err, _)| err)
        .expect("record delivered over TLS");
    let consumer = kafka
        .consumer(&format!("tests-tls-{}", uuid::Uuid::new_v4().simple()))
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("record read over TLS");
    assert_eq!(message.payload(), Some(&b"over tls"[..]));
}

#[tokio::test]
async fn mailrooms_clients_reach_a_tls_only_broker_with_properties_from_the_environment() {
    let dir = test_dir("kafka-tls");
    let ca = TestCa::new("mailroom test kafka CA");
    let broker = TlsBroker::start(&ca, None).await;
    let properties = tls_trusting(&ca.write(&dir, "ca.crt"));
    let kafka = settings(broker.brokers(), properties);
    round_trip(&kafka).await;
    assert_eq!(
        kafka
            .partition_count(
                &kafka.topics.name(Topic::IdentityEvents),
                Duration::from_secs(10)
            )
            .await
            .expect("metadata over TLS"),
        1
    );
    assert!(
        broker.handshakes() > 0,
        "no TLS handshake reached the front"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_where_the_broker_asks_for_one() {
    let dir = test_dir("kafka-mtls");
    let ca = TestCa::new("mailroom test kafka CA");
    let ca_file = ca.write(&dir, "ca.crt");
    let client_ca = TestCa::new("mailroom test client CA");
    let broker = TlsBroker::start(&ca, Some(&client_ca)).await;
    let client = client_ca
        .issue("mailroom", &["mailroom"])
        .write(&dir, "client");
    let properties = from_env(&[
        ("MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SSL".into()),
        (
            "MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION",
            ca_file.display().to_string(),
        ),
        (
            "MAILROOM_KAFKA_PROPERTY_SSL_CERTIFICATE_LOCATION",
            client.cert.display().to_string(),
        ),
        (
            "MAILROOM_KAFKA_PROPERTY_SSL_KEY_LOCATION",
            client.key.display().to_string(),
        ),
    ]);
    round_trip(&settings(broker.brokers(), properties)).await;

    // Without the client certificate the broker is out of reach.
    let without = tls_trusting(&ca_file);
    let kafka = settings(broker.brokers(), without);
    let refused = kafka
        .partition_count(
            &kafka.topics.name(Topic::IdentityEvents),
            Duration::from_secs(3),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|lines| String::from_utf8_lossy(&lines).into_owned())
            .unwrap_or_default()
    }

    /// The first log line containing `needle`, waiting for it at most `limit`.
    async fn line_within(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let logs = self.text();
            if let Some(line) = logs.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "nothing logged containing {needle:?} within {limit:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends one record to `topic` with Mailroom's producer in a task of its own (a record the
/// broker never accepts is never settled: the task stays pending).
fn send_in_background(
    kafka: &KafkaSettings,
    topic: String,
) -> tokio::task::JoinHandle<Result<(), String>> {
    let producer = kafka.producer().expect("producer");
    tokio::spawn(async move {
        producer
            .send(
                FutureRecord::to(&topic).key("k").payload("never"),
                Duration::from_secs(1),
            )
            .await
            .map(|_| ())
            .map_err(|(err, _)| err.to_string())
    })
}

/// Makes the process's log (level info and up) go to the [`Captured`] returned.
fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .try_init()
        .expect("the capturing subscriber is the process's first");
    captured
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_is_refused_and_the_log_says_why() {
    let captured = capture_logs();

    let dir = test_dir("kafka-tls-other-ca");
    let ca = TestCa::new("mailroom test kafka CA");
    let other = TestCa::new("some other CA");
    let broker = TlsBroker::start(&ca, None).await;
    let properties = tls_trusting(&other.write(&dir, "other-ca.crt"));
    let kafka = settings(broker.brokers(), properties);
    let sent = send_in_background(&kafka, kafka.topics.name(Topic::IdentityEvents));
    captured
        .line_within("certificate verify failed", Duration::from_secs(10))
        .await;
    assert_eq!(
        broker.handshakes(),
        0,
        "a handshake completed with an untrusted certificate"
    );
    assert!(
        !sent.is_finished(),
        "the record was settled: {:?}",
        sent.await
    );
    sent.abort();
}

#[tokio::test]
async fn sasl_settings_from_the_environment_reach_a_scram_exchange_whose_refusal_is_logged_without_the_password(
) {
    let captured = capture_logs();
    let broker = SaslBroker::start();
    let topic = format!("test.sasl.{}", uuid::Uuid::new_v4().simple());

    // Without SASL the broker answers nothing (it requires authentication first).
    let plain = settings(broker.brokers(), KafkaProperties::default());
    let refused = plain.partition_count(&topic, Duration::from_secs(3)).await;
    assert!(refused.is_err(), "{refused:?}");

    // With the SASL properties an operator sets, librdkafka runs the SCRAM exchange with the
    // broker, which refuses the user it does not know (tansu cannot be given one: see
    // `SaslBroker`). What a person reads in the log names SASL, the mechanism and the
    // broker's answer, and never the password.
    let password = "Sasl-pw-7f3e9c1d";
    let properties = from_env(&[
        (
            "MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL",
            "SASL_PLAINTEXT".into(),
        ),
        (
            "MAILROOM_KAFKA_PROPERTY_SASL_MECHANISM",
            "SCRAM-SHA-512".into(),
        ),
        ("MAILROOM_KAFKA_PROPERTY_SASL_USERNAME", "mailroom".into()),
        ("MAILROOM_KAFKA_PROPERTY_SASL_PASSWORD", password.into()),
    ]);
    let kafka = settings(broker.brokers(), properties);
    let sent = send_in_background(&kafka, topic);
    let line = captured
        .line_within("SASL SCRAM authentication failed", Duration::from_secs(10))
        .await;
    assert!(line.contains("unknown-user"), "{line}");
    assert!(
        !sent.is_finished(),
        "a record was settled without a login: {:?}",
        sent.await
    );
    sent.abort();
    assert!(
        !captured.text().contains(password),
        "the SASL password reached the log"
    );
}

#[tokio::test]
async fn a_topic_with_fewer_partitions_than_configured_is_grown_at_start() {
    let captured = capture_logs();
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let mut kafka = settings(brokers, KafkaProperties::default());
    kafka.partitions = 2;
    kafka
        .ensure_topics(&[Topic::SyncRequests])
        .await
        .expect("topic created");
    let topic = kafka.topics.name(Topic::SyncRequests);
    let count = |kafka: KafkaSettings, topic: String| async move {
        kafka
            .partition_count(&topic, Duration::from_secs(10))
            .await
            .expect("partition count")
    };
    assert_eq!(count(kafka.clone(), topic.clone()).await, 2);

    kafka.partitions = 4;
    kafka
        .ensure_topics(&[Topic::SyncRequests])
        .await
        .expect("ensure_topics with more partitions (a refusal does not stop a start)");
    let now = count(kafka.clone(), topic.clone()).await;
    let logs = captured.text();
    let warning = logs
        .lines()
        .find(|line| line.contains("fewer partitions than MAILROOM_KAFKA_PARTITIONS"));
    match now {
        // A broker that adds partitions (Apache Kafka, Redpanda, MSK).
        4 => assert!(warning.is_none(), "grown, yet a warning: {logs}"),
        // tansu offers no CreatePartitions: the topic stays, and the log says why and what
        // to do.
        2 => {
            let warning = warning.unwrap_or_else(|| panic!("not grown and nothing logged: {logs}"));
            for needed in [
                topic.as_str(),
                "partitions=2",
                "configured=4",
                "kafka-topics.sh --alter",
                "MAILROOM_KAFKA_PARTITIONS=2",
                "UnsupportedFeature",
            ] {
                assert!(warning.contains(needed), "{needed} missing from: {warning}");
            }
        }
        other => panic!("the topic has {other} partitions"),
    }

    // Fewer than the topic has: left as it is (partitions are never removed).
    kafka.partitions = 1;
    kafka
        .ensure_topics(&[Topic::SyncRequests])
        .await
        .expect("ensure_topics with fewer partitions");
    assert_eq!(count(kafka.clone(), topic.clone()).await, now);

    let missing = kafka
        .partition_count(&format!("{topic}.missing"), Duration::from_secs(5))
        .await;
    assert!(missing.is_err(), "{missing:?}");
}
