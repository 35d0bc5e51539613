//! `mailroom health ENDPOINT…`: asks each endpoint's gRPC health service whether it is
//! serving, and fails unless all are. The chart's `helm test` hook runs it against every
//! service of a release. `https://` endpoints are checked over TLS with `--ca-file` (else the
//! public web roots) and, for services that require client certificates, `--cert-file` and
//! `--key-file` — by default the pod's own `MAILROOM_GRPC_TLS__*` files.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use mailroom_clients::ClientTls;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The TLS of `https://` endpoints.
#[derive(Args, Debug, Default)]
pub struct TlsArgs {
    /// PEM CA certificates the services' certificates must chain to (default: the public web
    /// roots).
    #[arg(long, env = "MAILROOM_GRPC_TLS__CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for services that require one (mutual TLS); with --key-file.
    #[arg(long, env = "MAILROOM_GRPC_TLS__CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, env = "MAILROOM_GRPC_TLS__KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

pub async fn check(endpoints: &[String], timeout: Duration, tls: &TlsArgs) -> anyhow::Result<()> {
    let tls = ClientTls::from_files(
        tls.ca_file.as_deref(),
        tls.cert_file.as_deref(),
        tls.key_file.as_deref(),
    )
    .context("--ca-file/--cert-file/--key-file (MAILROOM_GRPC_TLS__CA_FILE/CERT_FILE/KEY_FILE)")?;
    let mut failed = Vec::new();
    for endpoint in endpoints {
        match one(endpoint, timeout, &tls).await {
            Ok(()) => println!("SERVING      {endpoint}"),
            Err(err) => {
                println!("NOT SERVING  {endpoint}: {err:#}");
                failed.push(endpoint.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!("not serving: {}", failed.join(", "));
    }
    Ok(())
}

async fn one(endpoint: &str, timeout: Duration, tls: &ClientTls) -> anyhow::Result<()> {
    let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("`{endpoint}` is not a URL (http://host:port)"))?;
    if channel.uri().scheme_str() == Some("https") {
        channel = channel
            .tls_config(tls.tonic_config())
            .context("TLS cannot be set up from the given files")?;
    }
    let channel = channel
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .context("cannot connect")?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .context("the health check failed")?
        .into_inner();
    match ServingStatus::try_from(answer.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => bail!("status {}", other.as_str_name()),
        Err(_) => bail!("unknown status {}", answer.status),
    }
}
