use std::collections::BTreeMap;

use axum::extract::State;
use ruma::api::client::discovery::get_supported_versions;

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma},
};

/// The spec versions whose client-server API this server implements.
const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

/// The `unstable_features` this server has, each checked against the endpoints that serve it
/// (Synapse's list, `rust/src/handlers/versions.rs`, less what is not implemented here: label
/// filtering, mutual rooms, busy presence, MSC3874 relation filters, account data deletion,
/// …). Clients decide from these: Element offers cross-signing set-up only with
/// `org.matrix.e2e_cross_signing`, matrix-rust-sdk asks for room summaries with
/// `org.matrix.msc3266`.
const UNSTABLE_FEATURES: &[&str] = &[
    // Cross-signing keys and signatures (`/keys/device_signing/upload`, `/keys/signatures/upload`).
    "org.matrix.e2e_cross_signing",
    // `GET /rooms/{roomId}/aliases`.
    "org.matrix.msc2432",
    // Private read receipts (`m.read.private`).
    "org.matrix.msc2285.stable",
    // `/publicRooms` filtered by room type.
    "org.matrix.msc3827.stable",
    // Threads: `m.thread` relations, their bundled summaries, `/threads`.
    "org.matrix.msc3440.stable",
    // Threaded read receipts (`thread_id`) and per-thread notification counts.
    "org.matrix.msc3771",
    "org.matrix.msc3773",
    // `/relations?recurse=true`.
    "org.matrix.msc3981",
    // Room summaries (`/room_summary` and the unstable `im.nheko.summary` paths).
    "org.matrix.msc3266",
    // Simplified sliding sync (MSC4186), which Element X requires: matrix-rust-sdk uses it only
    // when this is advertised.
    "org.matrix.simplified_msc3575",
    // Extended profile fields (MSC4133) on the stable paths, before a client sees `v1.16`.
    "uk.tcpip.msc4133.stable",
];

/// `GET /_matrix/client/versions`
pub async fn get_supported_versions(
    State(services): State<AppState>,
    _: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(
        SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features = UNSTABLE_FEATURES
        .iter()
        .map(|feature| ((*feature).to_owned(), true))
        .collect::<BTreeMap<_, _>>();
    // Delayed events, as Synapse: listed always, true once `max_event_delay_duration` is set.
    response.unstable_features.insert(
        "org.matrix.msc4140".to_owned(),
        services.delayed_events.enabled(),
    );
    // MSC4133's unstable prefix: listed off, as Synapse does without its experimental flag.
    response
        .unstable_features
        .insert("uk.tcpip.msc4133".to_owned(), false);
    Ok(response.into())
}
