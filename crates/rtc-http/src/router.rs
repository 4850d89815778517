//! Choosing a handler by path and method.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, StatusCode};

use crate::{text, Request, Response};

/// Answers one request. Errors are responses too (a 4xx or 5xx), so there is no error type:
/// the server has nothing better to do with a failure than send what the handler chose.
///
/// Implemented for every `Fn(Request) -> impl Future<Output = Response>` that can be
/// shared between connection tasks, so a closure capturing an `Arc` of its state is a
/// handler.
pub trait Handler: Send + Sync + 'static {
    /// Produces the response to `request`.
    fn call(&self, request: Request) -> Pin<Box<dyn Future<Output = Response> + Send>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, request: Request) -> Pin<Box<dyn Future<Output = Response> + Send>> {
        Box::pin(self(request))
    }
}

struct Route {
    path: String,
    method: Method,
    handler: Arc<dyn Handler>,
}

/// Routes by exact path and method. The query string is not part of the match: Prometheus
/// and browsers may append parameters that do not change what is served.
///
/// A path that exists with another method gets `405 Method Not Allowed` with an `Allow`
/// header (RFC 9110 §15.5.6); an unknown path gets `404 Not Found`. A `GET` route also
/// answers `HEAD`, as RFC 9110 §9.3.2 expects; hyper sends the head without the body.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| (&r.method, &r.path)))
            .finish()
    }
}

impl Router {
    /// A router with no routes: every request gets 404.
    pub fn new() -> Router {
        Router::default()
    }

    /// Serves `method` requests for `path` (exact, starting with `/`) with `handler`.
    ///
    /// # Panics
    /// If `path` does not start with `/` or the same method and path were routed already:
    /// both are mistakes in start-up code that the first test running it should catch.
    pub fn route(mut self, method: Method, path: &str, handler: impl Handler) -> Router {
        assert!(
            path.starts_with('/'),
            "route path {path:?} must start with /"
        );
        assert!(
            !self
                .routes
                .iter()
                .any(|r| r.method == method && r.path == path),
            "{method} {path} routed twice"
        );
        self.routes.push(Route {
            path: path.to_owned(),
            method,
            handler: Arc::new(handler),
        });
        self
    }

    /// Shorthand for [`Router::route`] with `GET` (which also answers `HEAD`).
    pub fn get(self, path: &str, handler: impl Handler) -> Router {
        self.route(Method::GET, path, handler)
    }

    /// The response to `request`: from the route's handler, or a 404/405.
    pub(crate) async fn dispatch(&self, request: Request) -> Response {
        let path = request.uri().path();
        let method = request.method();
        let serves =
            |r: &Route| r.method == method || (method == Method::HEAD && r.method == Method::GET);
        if let Some(route) = self.routes.iter().find(|r| r.path == path && serves(r)) {
            return route.handler.call(request).await;
        }
        let mut allowed = Vec::new();
        for route in self.routes.iter().filter(|r| r.path == path) {
            allowed.push(route.method.as_str());
            if route.method == Method::GET {
                allowed.push(Method::HEAD.as_str());
            }
        }
        if allowed.is_empty() {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(ALLOW, allow);
        }
        response
    }
}
