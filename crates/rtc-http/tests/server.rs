//! The server over real sockets: routing, the limits, HTTPS and taking a connection over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc_http::hyper::header::{CONNECTION, UPGRADE};
use rtc_http::hyper::{Method, StatusCode};
use rtc_http::{Limits, Request, Router, Server, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

async fn hello(_: Request) -> rtc_http::Response {
    rtc_http::text(StatusCode::OK, "hello\n")
}

fn router() -> Router {
    Router::new()
        .get("/hello", hello)
        .route(Method::POST, "/form", |_| async {
            rtc_http::text(StatusCode::NO_CONTENT, "")
        })
        // Never answers: only the response deadline ends the exchange.
        .get("/stuck", |_| async {
            std::future::pending::<()>().await;
            unreachable!()
        })
        .get("/echo", echo_upgrade)
}

/// Takes the connection over after `101 Switching Protocols` and echoes bytes back, as a
/// WebSocket endpoint will hand its stream to the SIP or XMPP side.
async fn echo_upgrade(mut request: Request) -> rtc_http::Response {
    let upgrade = rtc_http::hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            if io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut response = rtc_http::text(StatusCode::SWITCHING_PROTOCOLS, "");
    response
        .headers_mut()
        .insert(UPGRADE, "echo".parse().unwrap());
    response
        .headers_mut()
        .insert(CONNECTION, "upgrade".parse().unwrap());
    response
}

async fn start(limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Server::new(router()).limits(limits).serve(listener));
    addr
}

/// Sends `request`, reads until the server closes (or 5 s pass) and returns what came.
async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> String {
    // The server may answer (431) and close before reading everything we send.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    exchange_on(&mut TcpStream::connect(addr).await.unwrap(), request).await
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let (head, _) = response.split_once("\r\n\r\n")?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn routes_by_path_and_method() {
    let addr = start(Limits::default()).await;

    let resp = exchange(addr, b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nhello\n"), "{resp}");
    assert_eq!(header(&resp, "content-length"), Some("6"));
    assert_eq!(header(&resp, "connection"), Some("close"));

    // HEAD: same head, no body (RFC 9110 §9.3.2).
    let resp = exchange(addr, b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert_eq!(header(&resp, "content-length"), Some("6"));
    assert!(resp.ends_with("\r\n\r\n"), "{resp}");

    // HTTP/1.0, as Prometheus and rtc-admin send it.
    let resp = exchange(addr, b"GET /hello HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1."), "{resp}");
    assert!(
        resp.contains(" 200 OK\r\n") && resp.ends_with("hello\n"),
        "{resp}"
    );

    let resp = exchange(addr, b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");

    let resp = exchange(addr, b"DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
    assert_eq!(header(&resp, "allow"), Some("GET, HEAD"));

    let resp = exchange(addr, b"POST /form HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 204 "), "{resp}");

    let resp = exchange(addr, b"GET /hello SPDY/3\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
}

#[tokio::test]
async fn a_client_that_shuts_down_its_side_still_gets_the_answer() {
    let addr = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.contains(" 200 OK\r\n") && out.ends_with("hello\n"),
        "{out}"
    );
}

/// `GET /hello` with a header field of `len` bytes.
fn with_header_of(len: usize) -> Vec<u8> {
    let mut req = b"GET /hello HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', len));
    req.extend_from_slice(b"\r\n\r\n");
    req
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let limits = Limits {
        max_head_bytes: 1024,
        ..Limits::default()
    };
    let addr = start(limits).await;
    // Small enough to arrive in one read, so the server has read everything when it
    // answers and closing cannot turn into a reset that would swallow the 431.
    let resp = exchange(addr, &with_header_of(1500)).await;
    assert!(
        resp.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{resp}"
    );

    // Just under the limit is served.
    let resp = exchange(addr, &with_header_of(900)).await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
}

/// The server closed no sooner than `at_least` after `started`, and not seconds late.
fn assert_closed_between(started: Instant, at_least: Duration) {
    let took = started.elapsed();
    assert!(
        took >= at_least && took < at_least + Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn slow_client_is_cut_off() {
    let limits = Limits {
        head_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let addr = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: ").await.unwrap();
    let mut out = Vec::new();
    let read = timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "still open after 5 s");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_closed_between(started, Duration::from_millis(250));
}

#[tokio::test]
async fn handler_and_writing_are_bounded_too() {
    let limits = Limits {
        head_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let addr = start(limits).await;
    let started = Instant::now();
    let resp = exchange(addr, b"GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.is_empty(), "{resp}");
    assert_closed_between(started, Duration::from_millis(400));
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_slot() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let addr = start(limits).await;
    // Two idle clients take both slots (the kernel hands connections out in order).
    let idle_1 = TcpStream::connect(addr).await.unwrap();
    let _idle_2 = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let early = timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served over the cap: {early:?}");

    drop(idle_1);
    let mut out = Vec::new();
    timeout(Duration::from_secs(5), third.read_to_end(&mut out))
        .await
        .expect("queued connection not served once a slot freed")
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
}

#[tokio::test]
async fn an_upgraded_connection_is_the_handlers_and_outlives_the_deadline() {
    let limits = Limits {
        head_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(200),
        max_connections: 1,
        ..Limits::default()
    };
    let addr = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .expect("no 101")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );

    // Past both deadlines, the stream still belongs to the echo task ...
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(&echo, b"ping");

    // ... and no longer holds the only HTTP slot.
    let resp = exchange(addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
}

/// A self-signed certificate for `localhost` loaded the way the daemons load theirs; the
/// directory holding the files, the store and the certificate's PEM.
fn certificate() -> (tempfile::TempDir, Arc<rtc_tls::CertStore>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = rtc_tls::self_signed(&["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let store = rtc_tls::CertStore::load(&cert, &key).unwrap();
    (dir, store, cert_pem)
}

#[tokio::test]
async fn https_with_an_rtc_tls_config() {
    let (_dir, store, cert_pem) = certificate();
    // Offered h2 on purpose: the server must still settle on http/1.1.
    let config = store.server_config(&[b"h2", b"http/1.1"]);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Server::new(router()).tls(config).serve(listener));

    let mut client = (*rtc_tls::client_config_trusting(&cert_pem).unwrap()).clone();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = "localhost".try_into().unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = exchange_on(&mut tls, b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("hello\n"), "{resp}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let resp = exchange(addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(!resp.starts_with("HTTP/"), "{resp}");
}

#[tokio::test]
async fn slow_tls_handshake_is_cut_off() {
    let (_dir, store, _) = certificate();
    let config = store.server_config(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        head_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    tokio::spawn(
        Server::new(router())
            .tls(config)
            .limits(limits)
            .serve(listener),
    );
    // Connect and say nothing: no ClientHello ever comes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let read = timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "still open after 5 s");
    assert!(out.is_empty());
}
