//! Starting the `/metrics` endpoint: the one place a daemon binds it and hands it its
//! registry, so the HTTP stack behind it can change without touching a daemon.

use crate::settings::ShellSettings;
use anyhow::Context;
use rtc_metrics::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::runtime::Runtime;
use tracing::{error, info};

/// Binds `prometheus-address:prometheus-port` (an error if it cannot: a typo should fail
/// start-up, not go unnoticed) and serves `registry` there on `rt`, when `prometheus` is
/// on.
pub fn serve(rt: &Runtime, s: &ShellSettings, registry: Arc<Registry>) -> anyhow::Result<()> {
    if !s.prometheus {
        return Ok(());
    }
    let addr = SocketAddr::new(s.prometheus_address, s.prometheus_port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("prometheus {addr}"))?;
    rt.spawn(async move {
        if let Err(e) = rtc_metrics::serve(listener, registry).await {
            error!("metrics endpoint stopped: {e}");
        }
    });
    info!("metrics on http://{addr}/metrics");
    Ok(())
}
