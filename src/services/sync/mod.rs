//! The two sync endpoints over one per-room computation.
//!
//! * `room.rs` decides what a room looks like to a user at a stream position: its timeline
//!   slice (`limited`, `prev_batch`), state (and lazy-loaded members), member counts and heroes,
//!   unread counts and receipts.
//! * `v3.rs` renders that as `/sync` (`GET /_matrix/client/v3/sync`), per since-token.
//! * `sliding.rs` renders it as simplified sliding sync (MSC4186), per connection; what each
//!   connection was already sent lives in memory in `connections.rs`.
//!
//! Both long-poll on the stream position (`rooms::publish`), never polling.

pub mod connections;
mod room;
pub mod sliding;
pub mod v3;

pub use v3::{SyncRequest, SyncToken, resolve_filter, sync};
