//! The data plane's server side: the listener, one task per connection
//! (weir's own HTTP/1.1 loop, or hyper for h2c, TLS, bodies and upgrades),
//! and the request path every request takes.
//!
//! ```text
//!  listener ──▶ conn (TLS, h1 loop or hyper, idle + head timers)
//!                 │ one request
//!                 ▼
//!  proxy::respond ──▶ phases: check → route → fault → pick an address
//!                 │     → body → rewrite → shadow → send (retries) → response
//!                 ▼
//!  response body (holds the RequestGuard: recorded once, at its end),
//!  or rescue: a ProxyError (error.rs: its status) becomes the response
//! ```
//!
//! Everything here receives the [`crate::dataplane::DataPlane`] and nothing
//! of the daemon.

pub(crate) mod access_log;
mod conn;
mod error;
mod grpc;
mod h1;
mod headers;
pub(crate) mod listener;
mod phases;
mod proxy;
mod request;
mod rescue;
mod response;
mod send;
pub(crate) mod shadow;
pub(crate) mod synthetic;
