//! `mailroom health ENDPOINT…`: asks each endpoint's gRPC health service whether it is
//! serving, and fails unless all are. The chart's `helm test` hook runs it against every
//! service of a release.

use std::time::Duration;

use anyhow::{bail, Context};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub async fn check(endpoints: &[String], timeout: Duration) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for endpoint in endpoints {
        match one(endpoint, timeout).await {
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

async fn one(endpoint: &str, timeout: Duration) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("`{endpoint}` is not a URL (http://host:port)"))?
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
