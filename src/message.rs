//! What the layer needs of a request and a response: their headers, and a response's status.
//!
//! Implemented for `http`'s types (tonic, hyper, axum, tower-http all use them) and, with the
//! `reqwest` feature, for reqwest's, so that one layer serves every stack.

use http::{HeaderMap, StatusCode};

/// A request the session layer can put credentials on.
pub trait SessionRequest {
    /// The request's headers.
    fn headers(&self) -> &HeaderMap;
    /// The request's headers, to add `authorization` to.
    fn headers_mut(&mut self) -> &mut HeaderMap;
    /// The request's path (for gRPC, `/package.Service/Method`), for the call's tracing span;
    /// empty by default.
    fn path(&self) -> &str {
        ""
    }
}

/// A response the session layer can read a refreshed token or a session failure from.
pub trait SessionResponse {
    /// The response's status (`200` for every gRPC response, failures included).
    fn status(&self) -> StatusCode;
    /// The response's headers (for gRPC, its initial metadata).
    fn headers(&self) -> &HeaderMap;
    /// The response's headers, to mark credentials sensitive.
    fn headers_mut(&mut self) -> &mut HeaderMap;
}

impl<B> SessionRequest for http::Request<B> {
    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }

    fn path(&self) -> &str {
        self.uri().path()
    }
}

impl<B> SessionResponse for http::Response<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }

    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl SessionRequest for reqwest::Request {
    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }

    fn path(&self) -> &str {
        self.url().path()
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl SessionResponse for reqwest::Response {
    fn status(&self) -> StatusCode {
        self.status()
    }

    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }
}
