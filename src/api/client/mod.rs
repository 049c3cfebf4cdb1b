//! The client-server API (`/_matrix/client`), one file per area of the spec.

mod account;
mod capabilities;
mod devices;
mod profile;
mod register;
mod session;
mod versions;

use axum::Router;
use ruma::api::client::{account as acc, device, discovery, profile as prof, session as ses};

use crate::web::{AppState, ruma::RumaRoutes};

pub fn routes() -> Router<AppState> {
    Router::new()
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
        .ruma::<device::get_devices::v3::Request, _, _>(devices::get_devices)
        .ruma::<device::get_device::v3::Request, _, _>(devices::get_device)
        .ruma::<device::update_device::v3::Request, _, _>(devices::update_device)
        .ruma::<device::delete_device::v3::Request, _, _>(devices::delete_device)
        .ruma::<device::delete_devices::v3::Request, _, _>(devices::delete_devices)
        .ruma::<prof::get_profile::v3::Request, _, _>(profile::get_profile)
        .ruma::<prof::get_display_name::v3::Request, _, _>(profile::get_display_name)
        .ruma::<prof::set_display_name::v3::Request, _, _>(profile::set_display_name)
        .ruma::<prof::get_avatar_url::v3::Request, _, _>(profile::get_avatar_url)
        .ruma::<prof::set_avatar_url::v3::Request, _, _>(profile::set_avatar_url)
}
