//! The suite's one HTTP stack: hyper's HTTP/1.1 server over plain TCP or rustls, a small
//! router, and the limits every connection lives under.
//!
//! Data flow: [`Server::serve`] accepts a TCP connection only while fewer than
//! [`Limits::max_connections`] are open, performs the TLS handshake when the server was given
//! a rustls config ([`Server::tls`]), and hands the stream to hyper, which parses one request
//! head (at most [`Limits::max_head_bytes`], within [`Limits::head_timeout`]). The
//! [`Router`] picks a [`Handler`] by path and method, the handler returns a [`Response`], hyper
//! writes it and the connection closes. Nothing here knows what a route serves: `/metrics`
//! comes from `rtc-metrics`, and the WebSocket endpoints (RFC 6455: SIP over WebSocket,
//! RFC 7118; XMPP over WebSocket, RFC 7395), the click-to-call page, XEP-0156 host-meta and
//! XEP-0363 uploads are meant to be further routes on the same [`Router`].
//!
//! Taking over a connection (RFC 6455 §4, RFC 9110 §7.8 `Upgrade`): a handler calls
//! [`hyper::upgrade::on`] on its request, spawns a task awaiting the returned future and
//! answers `101 Switching Protocols`; once hyper has written the 101, the task receives the
//! raw stream (wrap it in [`TokioIo`] for tokio's `AsyncRead`/`AsyncWrite`), with any bytes
//! the client sent after its request head. From then on the connection is the protocol's:
//! it no longer counts against [`Limits::max_connections`] nor the per-request deadline,
//! because a WebSocket session lives for hours and its daemon limits it on its own terms.
//!
//! Plain HTTP is meant for loopback (a local Prometheus, or one reached through a tunnel);
//! whatever faces the Internet is served with [`Server::tls`].
#![forbid(unsafe_code)]

mod router;
mod server;

pub use router::{Handler, Router};
pub use server::{Limits, Server};

pub use hyper;
pub use hyper_util::rt::TokioIo;

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;

/// A request as handlers receive it: the head plus hyper's streaming body, so a handler can
/// read the body (uploads) or take the connection over ([`hyper::upgrade::on`]).
pub type Request = hyper::Request<hyper::body::Incoming>;

/// A response body. Boxed so a page rendered in memory and a file streamed from disk (the
/// coming XEP-0363 downloads) share one handler signature.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response as handlers return it.
pub type Response = hyper::Response<Body>;

/// A body held in memory; its exact length goes out as `Content-Length`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with `status`, the given content type and `body`.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = hyper::Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A short plain-text response, for errors and refusals.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    response(status, "text/plain; charset=utf-8", body)
}
