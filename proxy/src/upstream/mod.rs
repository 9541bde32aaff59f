//! Upstreams: backends and their addresses ([`backend`], [`endpoint`]), the
//! clients that talk to them (weir's own HTTP/1.1 client in [`h1`], hyper's
//! in [`client`]), the bodies on that leg ([`body`]), active health checks,
//! fault injection, and the classification of upstream failures.

pub(crate) mod backend;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod fault;
pub(crate) mod h1;
pub(crate) mod health;

pub(crate) use backend::Backend;
pub(crate) use endpoint::{Endpoint, EndpointGuard};
pub(crate) use error::UpstreamErrorKind;
pub(crate) use h1::pool::Discard;
