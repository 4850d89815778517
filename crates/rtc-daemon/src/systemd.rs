//! sd_notify(3) for the daemons' `Type=notify` units: one datagram (`READY=1`,
//! `STOPPING=1`, ...) to the socket systemd names in `NOTIFY_SOCKET`, a filesystem path or
//! an abstract socket (`@name`). Without that variable (not started by systemd) nothing
//! is sent. Written here rather than linking libsystemd: it is a few lines of std.

use std::os::unix::net::UnixDatagram;

/// Tells systemd about `state` if it is watching; a failure is logged, never fatal (the
/// unit's start time-out is what catches a daemon systemd never heard from).
pub fn notify_or_warn(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Sends `state` to systemd if it is watching; `Ok(())` when it is not.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_named_socket() {
        let dir = std::env::temp_dir().join(format!("rtc-systemd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        // The only test in rtc-daemon that touches NOTIFY_SOCKET, so no other thread reads it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(notify("READY=1").is_ok(), "no socket: nothing to do");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
