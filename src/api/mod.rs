//! HTTP handlers, thin: each turns a ruma request into one service call and the result back into
//! a ruma response. One file per area of the spec.

pub mod client;
pub mod media_http;
pub mod server;
pub mod synapse_admin;
pub mod well_known;
