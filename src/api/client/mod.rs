//! The client-server API (`/_matrix/client`), one file per area of the spec.

mod account;
mod account_data;
mod appservice;
mod backup;
mod capabilities;
mod delayed_events;
mod devices;
mod directory;
mod ephemeral;
mod events;
mod keys;
mod legacy;
mod media;
mod presence;
mod profile;
mod push;
mod pushers;
mod register;
mod reports;
mod room_extras;
mod rooms;
mod session;
mod sync;
mod tags;
mod thirdparty;
mod versions;
mod voip;

use axum::Router;
use ruma::api::client::{
    account as acc, config, delayed_events as delayed, device, discovery, filter, knock,
    membership as mem, message, profile as prof, read_marker, receipt, redact, room,
    session as ses, state, sync::sync_events, typing,
};

use crate::web::{AppState, ruma::RumaRoutes};

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(room_extras::routes())
        .merge(directory::routes())
        .merge(push::routes())
        .merge(pushers::routes())
        .merge(presence::routes())
        .merge(tags::routes())
        .merge(keys::routes())
        .merge(backup::routes())
        .merge(media::routes())
        .merge(thirdparty::routes())
        .merge(reports::routes())
        .merge(legacy::routes())
        .merge(appservice::routes())
        .ruma::<ruma::api::client::voip::get_turn_server_info::v3::Request, _, _>(
            voip::get_turn_server,
        )
        .ruma::<discovery::get_supported_versions::Request, _, _>(versions::get_supported_versions)
        .ruma::<discovery::get_capabilities::v3::Request, _, _>(capabilities::get_capabilities)
        .ruma::<ses::get_login_types::v3::Request, _, _>(session::get_login_types)
        .ruma::<ses::login::v3::Request, _, _>(session::login)
        .ruma::<ses::logout::v3::Request, _, _>(session::logout)
        .ruma::<ses::logout_all::v3::Request, _, _>(session::logout_all)
        .ruma::<acc::register::v3::Request, _, _>(register::register)
        .ruma::<acc::get_username_availability::v3::Request, _, _>(register::username_available)
        .ruma::<acc::check_registration_token_validity::v1::Request, _, _>(
            register::registration_token_validity,
        )
        .ruma::<acc::whoami::v3::Request, _, _>(account::whoami)
        .ruma::<acc::change_password::v3::Request, _, _>(account::change_password)
        .ruma::<acc::deactivate::v3::Request, _, _>(account::deactivate)
        .ruma::<acc::request_openid_token::v3::Request, _, _>(account::request_openid_token)
        .ruma::<device::get_devices::v3::Request, _, _>(devices::get_devices)
        .ruma::<ruma::api::client::admin::get_user_info::v3::Request, _, _>(devices::whois)
        .ruma::<device::get_device::v3::Request, _, _>(devices::get_device)
        .ruma::<device::update_device::v3::Request, _, _>(devices::update_device)
        .ruma::<device::delete_device::v3::Request, _, _>(devices::delete_device)
        .ruma::<device::delete_devices::v3::Request, _, _>(devices::delete_devices)
        .ruma::<prof::get_profile::v3::Request, _, _>(profile::get_profile)
        .ruma::<prof::get_display_name::v3::Request, _, _>(profile::get_display_name)
        .ruma::<prof::set_display_name::v3::Request, _, _>(profile::set_display_name)
        .ruma::<prof::get_avatar_url::v3::Request, _, _>(profile::get_avatar_url)
        .ruma::<prof::set_avatar_url::v3::Request, _, _>(profile::set_avatar_url)
        // Any other field; `displayname` and `avatar_url` above win on the same paths.
        .ruma::<prof::get_profile_field::v3::Request, _, _>(profile::get_profile_field)
        .ruma::<prof::set_profile_field::v3::Request, _, _>(profile::set_profile_field)
        .ruma::<prof::delete_profile_field::v3::Request, _, _>(profile::delete_profile_field)
        .ruma_with_fixed_last_arg::<prof::delete_profile_field::v3::Request, _, _>(
            profile::delete_profile_field,
            "displayname",
        )
        .ruma_with_fixed_last_arg::<prof::delete_profile_field::v3::Request, _, _>(
            profile::delete_profile_field,
            "avatar_url",
        )
        .ruma::<room::create_room::v3::Request, _, _>(rooms::create_room)
        .ruma::<mem::join_room_by_id::v3::Request, _, _>(rooms::join_room_by_id)
        .ruma::<mem::join_room_by_id_or_alias::v3::Request, _, _>(rooms::join_room_by_id_or_alias)
        .ruma::<knock::knock_room::v3::Request, _, _>(rooms::knock_room)
        .ruma::<mem::invite_user::v3::Request, _, _>(rooms::invite_user)
        .ruma::<mem::leave_room::v3::Request, _, _>(rooms::leave_room)
        .ruma::<mem::kick_user::v3::Request, _, _>(rooms::kick_user)
        .ruma::<mem::ban_user::v3::Request, _, _>(rooms::ban_user)
        .ruma::<mem::unban_user::v3::Request, _, _>(rooms::unban_user)
        .ruma::<mem::forget_room::v3::Request, _, _>(rooms::forget_room)
        .ruma::<mem::joined_rooms::v3::Request, _, _>(rooms::joined_rooms)
        .ruma::<mem::get_member_events::v3::Request, _, _>(events::get_member_events)
        .ruma::<mem::joined_members::v3::Request, _, _>(events::joined_members)
        // Delayed or not (`?org.matrix.msc4140.delay=`): `delayed_events.rs` decides.
        .ruma::<message::send_message_event::v3::Request, _, _>(delayed_events::send_message_event)
        .ruma::<message::get_message_events::v3::Request, _, _>(events::get_message_events)
        .ruma::<state::send_state_event::v3::Request, _, _>(delayed_events::send_state_event)
        .ruma::<state::get_state_event_for_key::v3::Request, _, _>(events::get_state_event_for_key)
        .ruma::<state::get_state_events::v3::Request, _, _>(events::get_state_events)
        .ruma::<room::get_room_event::v3::Request, _, _>(events::get_room_event)
        .ruma::<redact::redact_event::v3::Request, _, _>(events::redact_event)
        .ruma::<delayed::get_all_delayed_events::unstable::Request, _, _>(
            delayed_events::get_delayed_events,
        )
        .ruma::<delayed::get_delayed_event::unstable::Request, _, _>(
            delayed_events::get_delayed_event,
        )
        .ruma::<delayed::update_delayed_event::unstable_v1::Request, _, _>(
            delayed_events::update_delayed_event,
        )
        .ruma::<delayed::update_delayed_event::unstable_v2::Request, _, _>(
            delayed_events::update_delayed_event_by_path,
        )
        .ruma::<sync_events::v3::Request, _, _>(sync::sync_events)
        .ruma::<sync_events::v5::Request, _, _>(sync::sliding_sync)
        .ruma::<filter::create_filter::v3::Request, _, _>(sync::create_filter)
        .ruma::<filter::get_filter::v3::Request, _, _>(sync::get_filter)
        .ruma::<config::set_global_account_data::v3::Request, _, _>(account_data::set_global)
        .ruma::<config::get_global_account_data::v3::Request, _, _>(account_data::get_global)
        .ruma::<config::set_room_account_data::v3::Request, _, _>(account_data::set_room)
        .ruma::<config::get_room_account_data::v3::Request, _, _>(account_data::get_room)
        .ruma::<typing::create_typing_event::v3::Request, _, _>(ephemeral::create_typing_event)
        .ruma::<receipt::create_receipt::v3::Request, _, _>(ephemeral::create_receipt)
        .ruma::<read_marker::set_read_marker::v3::Request, _, _>(ephemeral::set_read_marker)
        // The spec lets clients omit an empty state key: `/state/{type}` means `/state/{type}/`.
        .ruma_with_empty_last_arg::<state::send_state_event::v3::Request, _, _>(
            delayed_events::send_state_event,
        )
        .ruma_with_empty_last_arg::<state::get_state_event_for_key::v3::Request, _, _>(
            events::get_state_event_for_key,
        )
}
