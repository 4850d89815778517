//! RFC 3263 server location for the core's [`Output::Resolve`] orders: which transport,
//! address and port a request for `sip(s):host` goes to.
//!
//! Section 4.1/4.2 in the form most SIP providers publish: an explicit port means A/AAAA
//! for the host with the URI's transport (UDP by default, TLS for `sips:`); otherwise SRV
//! records (`_sips._tcp` for `sips:` or `transport=tls`, `_sip._tcp` for `transport=tcp`,
//! else `_sip._udp` then `_sip._tcp`), ordered by priority and weight, each target's
//! addresses in turn; with no SRV record, A/AAAA on the default port. NAPTR is not
//! consulted (providers that publish it publish the SRV records it points to as well).
//!
//! [`Output::Resolve`]: sip_proto::core::Output::Resolve

use crate::core_loop::Event;
use crate::metrics::Metrics;
use hickory_resolver::TokioAsyncResolver;
use sip_proto::txn::{Peer, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// One lookup the core asked for.
#[derive(Debug)]
pub struct Query {
    pub id: u64,
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    pub secure: bool,
}

/// Serves lookups until the queue closes; each answer goes back as [`Event::Resolved`].
pub async fn resolver_task(
    mut rx: mpsc::Receiver<Query>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) {
    let resolver = match TokioAsyncResolver::tokio_from_system_conf() {
        Ok(r) => Arc::new(r),
        Err(e) => {
            warn!("DNS: cannot read the system resolver configuration ({e}); host names will not resolve");
            while let Some(q) = rx.recv().await {
                let _ = events
                    .send(Event::Resolved {
                        id: q.id,
                        peers: Vec::new(),
                    })
                    .await;
            }
            return;
        }
    };
    while let Some(q) = rx.recv().await {
        let resolver = resolver.clone();
        let events = events.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.dns_lookups.inc();
            let peers = locate(&resolver, &q).await;
            if peers.is_empty() {
                metrics.dns_failures.inc();
                debug!("DNS: no destination for {}", q.host);
            }
            let _ = events.send(Event::Resolved { id: q.id, peers }).await;
        });
    }
}

fn default_port(t: Transport) -> u16 {
    if t == Transport::Tls || t == Transport::Wss {
        5061
    } else {
        5060
    }
}

/// Destinations for `q`, most preferred first (RFC 3263 section 4).
async fn locate(resolver: &TokioAsyncResolver, q: &Query) -> Vec<Peer> {
    let host = q.host.trim_end_matches('.');
    let forced = q.transport.or(q.secure.then_some(Transport::Tls));
    if let Some(port) = q.port {
        // Section 4.2: a port means no SRV lookup.
        let t = forced.unwrap_or(Transport::Udp);
        return addresses(resolver, host, port)
            .await
            .into_iter()
            .map(|addr| peer(t, addr))
            .collect();
    }
    let candidates: Vec<(Transport, &str)> = match forced {
        Some(Transport::Tls) => vec![(Transport::Tls, "_sips._tcp")],
        Some(Transport::Tcp) => vec![(Transport::Tcp, "_sip._tcp")],
        Some(Transport::Udp) => vec![(Transport::Udp, "_sip._udp")],
        Some(_) => vec![],
        None => vec![(Transport::Udp, "_sip._udp"), (Transport::Tcp, "_sip._tcp")],
    };
    for (t, prefix) in &candidates {
        let name = format!("{prefix}.{host}.");
        let Ok(srv) = resolver.srv_lookup(name.as_str()).await else {
            continue;
        };
        let mut records: Vec<_> = srv.iter().cloned().collect();
        // Lowest priority first; within one, heavier weights first (RFC 2782's weighted
        // random choice made deterministic: a proxy retries the list in order anyway).
        records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
        let mut out = Vec::new();
        for r in records {
            let target = r.target().to_utf8();
            if target == "." {
                continue; // "service decidedly not available" (RFC 2782)
            }
            for addr in addresses(resolver, target.trim_end_matches('.'), r.port()).await {
                out.push(peer(*t, addr));
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    // Section 4.2: no SRV records, A/AAAA on the transport's default port.
    let t = forced.unwrap_or(Transport::Udp);
    addresses(resolver, host, default_port(t))
        .await
        .into_iter()
        .map(|addr| peer(t, addr))
        .collect()
}

async fn addresses(resolver: &TokioAsyncResolver, host: &str, port: u16) -> Vec<SocketAddr> {
    match resolver.lookup_ip(host).await {
        Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        Err(e) => {
            debug!("DNS: {host}: {e}");
            Vec::new()
        }
    }
}

fn peer(transport: Transport, addr: SocketAddr) -> Peer {
    Peer {
        transport,
        addr,
        conn: None,
    }
}
