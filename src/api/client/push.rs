//! Push rules (`/pushrules`). The rules live in the user's `m.push_rules` account data.

use axum::{Router, extract::State};
use ruma::api::client::push::{
    delete_pushrule::v3 as delete_pushrule, get_pushrule::v3 as get_pushrule,
    get_pushrule_actions::v3 as get_pushrule_actions,
    get_pushrule_enabled::v3 as get_pushrule_enabled, get_pushrules_all::v3 as get_pushrules_all,
    get_pushrules_global_scope::v3 as get_pushrules_global_scope, set_pushrule::v3 as set_pushrule,
    set_pushrule_actions::v3 as set_pushrule_actions,
    set_pushrule_enabled::v3 as set_pushrule_enabled,
};

use crate::{
    services::push,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_pushrules_all::Request, _, _>(get_pushrules_all)
        .ruma::<get_pushrules_global_scope::Request, _, _>(get_pushrules_global_scope)
        .ruma::<get_pushrule::Request, _, _>(get_pushrule)
        .ruma::<set_pushrule::Request, _, _>(set_pushrule)
        .ruma::<delete_pushrule::Request, _, _>(delete_pushrule)
        .ruma::<get_pushrule_enabled::Request, _, _>(get_pushrule_enabled)
        .ruma::<set_pushrule_enabled::Request, _, _>(set_pushrule_enabled)
        .ruma::<get_pushrule_actions::Request, _, _>(get_pushrule_actions)
        .ruma::<set_pushrule_actions::Request, _, _>(set_pushrule_actions)
}

/// `GET /_matrix/client/v3/pushrules/`
async fn get_pushrules_all(
    State(services): State<AppState>,
    request: Ruma<get_pushrules_all::Request>,
) -> ApiResult<get_pushrules_all::Response> {
    let sender = request.sender()?;
    let ruleset = push::ruleset(&services, &sender.user_id).await?;
    Ok(get_pushrules_all::Response::new(ruleset).into())
}

/// `GET /_matrix/client/v3/pushrules/global/`
async fn get_pushrules_global_scope(
    State(services): State<AppState>,
    request: Ruma<get_pushrules_global_scope::Request>,
) -> ApiResult<get_pushrules_global_scope::Response> {
    let sender = request.sender()?;
    let ruleset = push::ruleset(&services, &sender.user_id).await?;
    Ok(get_pushrules_global_scope::Response::new(ruleset).into())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn get_pushrule(
    State(services): State<AppState>,
    request: Ruma<get_pushrule::Request>,
) -> ApiResult<get_pushrule::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let rule = push::rule(&services, &sender.user_id, body.kind.clone(), &body.rule_id).await?;
    Ok(get_pushrule::Response::new(rule).into())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn set_pushrule(
    State(services): State<AppState>,
    request: Ruma<set_pushrule::Request>,
) -> ApiResult<set_pushrule::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    push::set_rule(&services, &sender, body.rule, body.before, body.after).await?;
    Ok(set_pushrule::Response::new().into())
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_pushrule(
    State(services): State<AppState>,
    request: Ruma<delete_pushrule::Request>,
) -> ApiResult<delete_pushrule::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    push::delete_rule(&services, &sender.user_id, body.kind.clone(), &body.rule_id).await?;
    Ok(delete_pushrule::Response::new().into())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn get_pushrule_enabled(
    State(services): State<AppState>,
    request: Ruma<get_pushrule_enabled::Request>,
) -> ApiResult<get_pushrule_enabled::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let enabled =
        push::enabled(&services, &sender.user_id, body.kind.clone(), &body.rule_id).await?;
    Ok(get_pushrule_enabled::Response::new(enabled).into())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn set_pushrule_enabled(
    State(services): State<AppState>,
    request: Ruma<set_pushrule_enabled::Request>,
) -> ApiResult<set_pushrule_enabled::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    push::set_enabled(
        &services,
        &sender.user_id,
        body.kind.clone(),
        &body.rule_id,
        body.enabled,
    )
    .await?;
    Ok(set_pushrule_enabled::Response::new().into())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn get_pushrule_actions(
    State(services): State<AppState>,
    request: Ruma<get_pushrule_actions::Request>,
) -> ApiResult<get_pushrule_actions::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let actions =
        push::actions(&services, &sender.user_id, body.kind.clone(), &body.rule_id).await?;
    Ok(get_pushrule_actions::Response::new(actions).into())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn set_pushrule_actions(
    State(services): State<AppState>,
    request: Ruma<set_pushrule_actions::Request>,
) -> ApiResult<set_pushrule_actions::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    push::set_actions(&services, &sender, body.kind, &body.rule_id, body.actions).await?;
    Ok(set_pushrule_actions::Response::new().into())
}
