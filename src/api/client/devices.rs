use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::{
        admin::get_user_info::v3 as get_user_info,
        device::{
            Device, delete_device::v3 as delete_device, delete_devices::v3 as delete_devices,
            get_device::v3 as get_device, get_devices::v3 as get_devices,
            update_device::v3 as update_device,
        },
        uiaa::{AuthFlow, AuthType},
    },
};

use crate::{
    error::Error,
    storage::users::DeviceRow,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

fn to_device(row: DeviceRow) -> Device {
    let mut device = Device::new(row.device_id.as_str().into());
    device.display_name = row.display_name;
    device.last_seen_ip = row.last_seen_ip;
    device.last_seen_ts = row
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    device
}

/// `GET /_matrix/client/v3/devices`
pub async fn get_devices(
    State(services): State<AppState>,
    request: Ruma<get_devices::Request>,
) -> ApiResult<get_devices::Response> {
    let devices = services
        .sessions
        .devices(&request.sender()?.user_id)
        .await?;
    Ok(get_devices::Response::new(devices.into_iter().map(to_device).collect()).into())
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    State(services): State<AppState>,
    request: Ruma<get_device::Request>,
) -> ApiResult<get_device::Response> {
    let device = services
        .sessions
        .device(&request.sender()?.user_id, request.body.device_id.as_str())
        .await?;
    Ok(get_device::Response::new(to_device(device)).into())
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device(
    State(services): State<AppState>,
    request: Ruma<update_device::Request>,
) -> ApiResult<update_device::Response> {
    let sender = request.sender()?;
    services
        .sessions
        .rename_device(
            &sender.user_id,
            request.body.device_id.as_str(),
            request.body.display_name.clone(),
        )
        .await?;
    Ok(update_device::Response::new().into())
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`: needs the password again (UIA).
pub async fn delete_device(
    State(services): State<AppState>,
    request: Ruma<delete_device::Request>,
) -> ApiResult<delete_device::Response> {
    let sender = request.sender()?;
    // A missing device is reported before asking for the password, as Synapse does.
    services
        .sessions
        .device(&sender.user_id, request.body.device_id.as_str())
        .await?;
    let flows = vec![AuthFlow::new(vec![AuthType::Password])];
    services
        .uiaa
        .authenticate(
            &services,
            request.body.auth.as_ref(),
            &flows,
            Some(&sender.user_id),
            &request.uia_operation(),
        )
        .await?;
    if !services
        .sessions
        .delete_device(&sender.user_id, request.body.device_id.as_str())
        .await?
    {
        return Err(Error::not_found("No such device"));
    }
    Ok(delete_device::Response::new().into())
}

/// `POST /_matrix/client/v3/delete_devices`: needs the password again (UIA).
pub async fn delete_devices(
    State(services): State<AppState>,
    request: Ruma<delete_devices::Request>,
) -> ApiResult<delete_devices::Response> {
    let sender = request.sender()?;
    let flows = vec![AuthFlow::new(vec![AuthType::Password])];
    services
        .uiaa
        .authenticate(
            &services,
            request.body.auth.as_ref(),
            &flows,
            Some(&sender.user_id),
            &request.uia_operation(),
        )
        .await?;
    let ids = request.body.devices.iter().map(|d| d.to_string()).collect();
    services
        .sessions
        .delete_devices(&sender.user_id, ids)
        .await?;
    Ok(delete_devices::Response::new().into())
}

/// `GET /_matrix/client/v3/admin/whois/{userId}`: each device as one session with one
/// connection, its last-seen address and time (Synapse lists all of a user's connections under
/// the device `""`; the spec keys them by device). No user agent: none is stored.
pub async fn whois(
    State(services): State<AppState>,
    request: Ruma<get_user_info::Request>,
) -> ApiResult<get_user_info::Response> {
    let requester = &request.sender()?.user_id;
    let devices = services
        .users
        .whois(requester, &request.body.user_id)
        .await?;
    let mut response = get_user_info::Response::new();
    response.user_id = Some(request.body.user_id.clone());
    for row in devices {
        let mut connection = get_user_info::ConnectionInfo::new();
        connection.ip = row.last_seen_ip;
        connection.last_seen = row
            .last_seen_ts
            .and_then(|ts| UInt::try_from(ts).ok())
            .map(MilliSecondsSinceUnixEpoch);
        let mut session = get_user_info::SessionInfo::new();
        session.connections.push(connection);
        let mut device = get_user_info::DeviceInfo::new();
        device.sessions.push(session);
        response.devices.insert(row.device_id, device);
    }
    Ok(response.into())
}
