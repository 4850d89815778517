//! Binding listening sockets at start-up, before the core runs, so a bad address fails
//! start-up with a clear message; TCP sockets listen only once the core is ready, so no
//! connection waits on a core that is not there yet.

use anyhow::Context;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::SocketAddr;
use tracing::warn;

/// Connections the kernel queues before `accept`.
pub const TCP_BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // `[::]` serves IPv6 only, so it can sit beside `0.0.0.0` on the same port.
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A TCP socket bound to `addr` (address reuse on, so a restart does not wait for
/// TIME_WAIT), not yet listening.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(addr))?;
    Ok(s)
}

/// A UDP socket bound to `addr` with kernel buffers of `buffer` bytes each way. Bursts
/// (REGISTERs after a network outage, a TURN relay's peak) are lost in the kernel, not in
/// user space, so a buffer capped below what was asked (`net.core.rmem_max`) is logged.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.bind(&SockAddr::from(addr))?;
    if s.recv_buffer_size().is_ok_and(|n| n < buffer) {
        warn!(
            "udp {addr}: receive buffer is {} bytes, not {buffer}; raise net.core.rmem_max",
            s.recv_buffer_size().unwrap_or(0)
        );
    }
    Ok(s.into())
}

/// Starts listening on a socket from [`bind_tcp`]; `what` names it in the error.
pub fn listen(s: socket2::Socket, what: &str) -> anyhow::Result<std::net::TcpListener> {
    s.listen(TCP_BACKLOG)
        .with_context(|| format!("{what}: listen"))?;
    Ok(s.into())
}
