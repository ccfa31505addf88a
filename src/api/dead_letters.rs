//! Dead letters for administrators: push groups a recipient refused (`4xx`) or that reached
//! `max_attempts`. List, replay (sent again, first in line, attempts reset) and discard; replay
//! and discard are audit events.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::clock::rfc3339_ms;
use crate::config::Role;
use crate::deliver::push;
use crate::gateway::Gateway;
use crate::store::{PushGroup as StoredGroup, PushState};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// The state of a push group.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum PushStateName {
    /// Waiting to be sent (again).
    Pending,
    /// Delivered.
    Delivered,
    /// A dead letter.
    Dead,
    /// Given up for good.
    Discarded,
}

/// A push group as administrators see it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct PushGroup {
    /// Group id; also the `Idempotency-Key` of every attempt.
    id: String,
    /// The push recipient.
    recipient: String,
    /// Number of items.
    items: u64,
    /// State.
    state: PushStateName,
    /// Attempts made so far.
    attempts: u64,
    /// Status or transport error of the last attempt, with the first 500 bytes of the
    /// receiver's answer as text when it said something (`HTTP 400: …`).
    #[schema(required = true)]
    last_error: Option<String>,
    /// Last change (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    updated_at: String,
}

/// `GET /api/v1/admin/dead-letters`: dead letters, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct DeadLetterList {
    /// The groups in state `dead`.
    dead_letters: Vec<PushGroup>,
}

/// A push group as administrators see it.
pub(super) fn group_view(g: &StoredGroup) -> PushGroup {
    PushGroup {
        id: g.batch_id.clone(),
        recipient: g.recipient.clone(),
        items: u64::try_from(g.items).unwrap_or(0),
        state: match g.state {
            PushState::Pending => PushStateName::Pending,
            PushState::Delivered => PushStateName::Delivered,
            PushState::Dead => PushStateName::Dead,
            PushState::Discarded => PushStateName::Discarded,
        },
        attempts: u64::try_from(g.attempts).unwrap_or(0),
        last_error: g.last_error.clone(),
        updated_at: rfc3339_ms(g.updated_at),
    }
}

/// Query of `GET /admin/dead-letters`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this push recipient's dead letters.
    recipient: Option<String>,
}

/// `GET /api/v1/admin/dead-letters[?recipient=…]`, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/admin/dead-letters",
    operation_id = "list_dead_letters",
    tag = "admin",
    summary = "Push groups that could not be delivered",
    description = "Role: **admin**.\n\n\
        Groups of items a push recipient refused (a `4xx` other than `408`/`429`) or that \
        reached `max_attempts`, oldest first. Query parameters other than `recipient` are \
        refused (`400 R400`).",
    params(ListQuery),
    responses(
        (status = 200, description = "The dead letters.", body = DeadLetterList),
        (status = 400, description = "`R400`: an unknown query parameter.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let query: ListQuery = super::query(&req)?;
    let groups = gw
        .store
        .push_groups(PushState::Dead, query.recipient.as_deref())
        .await?;
    let dead_letters: Vec<PushGroup> = groups.iter().map(group_view).collect();
    Ok(HttpResponse::Ok().json(DeadLetterList { dead_letters }))
}

/// `POST /api/v1/admin/dead-letters/{id}/replay`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/dead-letters/{id}/replay",
    operation_id = "replay_dead_letter",
    tag = "admin",
    summary = "Send a dead letter again",
    description = "Role: **admin**.\n\n\
        The group is sent again, next in its recipient's line, with its attempts reset (an \
        audit event `dead_letter_replay`). No request body.",
    params(("id" = String, Path, description = "The group id.")),
    responses(
        (status = 200, description = "The group, `\"state\": \"pending\"`.", body = PushGroup),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, description = "`R409`: the group is not (or no longer) a dead letter.", body = crate::catalogue::ErrorBody),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn replay(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    settle(req, gw, path.into_inner(), PushState::Pending).await
}

/// `POST /api/v1/admin/dead-letters/{id}/discard`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/dead-letters/{id}/discard",
    operation_id = "discard_dead_letter",
    tag = "admin",
    summary = "Give a dead letter up for good",
    description = "Role: **admin**.\n\n\
        The group is never sent again (an audit event `dead_letter_discard`). No request body.",
    params(("id" = String, Path, description = "The group id.")),
    responses(
        (status = 200, description = "The group, `\"state\": \"discarded\"`.", body = PushGroup),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, description = "`R409`: the group is not (or no longer) a dead letter.", body = crate::catalogue::ErrorBody),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn discard(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    settle(req, gw, path.into_inner(), PushState::Discarded).await
}

async fn settle(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    id: String,
    to: PushState,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let Some(group) = gw.store.push_group(&id).await? else {
        return Err(ApiError::not_found());
    };
    if group.state != PushState::Dead {
        return Err(ApiError::new(
            Code::R409,
            format!("{id} is not a dead letter (it is {})", group.state.as_str()),
        ));
    }
    let now = gw.clock.now_ms();
    let event = push::settle_event(&group, to, &admin.id, now);
    match gw.store.settle_dead_letter(&id, to, now, &[event]).await? {
        Some(g) => Ok(HttpResponse::Ok().json(group_view(&g))),
        // Settled by someone else in between.
        None => Err(ApiError::new(
            Code::R409,
            format!("{id} is no longer a dead letter"),
        )),
    }
}
