//! Third-party networks (IRC, Slack, … behind bridges). A protocol comes from an application
//! service that registered it; none is supported yet, so every lookup finds nothing. The client
//! API (`api/client/thirdparty.rs`) asks only these functions: bridges plug in here.

use std::collections::BTreeMap;

use ruma::{
    RoomAliasId, UserId,
    thirdparty::{Location, Protocol, User},
};

/// The protocols bridges offer, by name (`GET /thirdparty/protocols`).
pub fn protocols() -> BTreeMap<String, Protocol> {
    BTreeMap::new()
}

/// Users of `protocol` matching the protocol's lookup `fields`.
pub fn users(_protocol: Option<&str>, _fields: &BTreeMap<String, String>) -> Vec<User> {
    Vec::new()
}

/// Portal rooms of `protocol` matching the protocol's lookup `fields`.
pub fn locations(_protocol: Option<&str>, _fields: &BTreeMap<String, String>) -> Vec<Location> {
    Vec::new()
}

/// The third-party users a bridge's Matrix user stands for.
pub fn users_for_matrix_id(_user_id: &UserId) -> Vec<User> {
    Vec::new()
}

/// The third-party locations a portal room alias stands for.
pub fn locations_for_alias(_alias: &RoomAliasId) -> Vec<Location> {
    Vec::new()
}
