//! The open tab as an activity signal (part C, design §4.8): `static/js/heartbeat.js` posts
//! `/activity` while a signed-in page is visible, and this records it with sync
//! (`RecordActivity`, client kind web tab) as the person, so their mail syncs at the active
//! tier. Answers are bare statuses for the script: 204 recorded, 401 no session (the script
//! goes to the sign-in page), 429/503 try at the next beat.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use mailroom_proto::sync::v1 as pb;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::session::EndSession;
use crate::state::AppState;

/// A bare status for the script (no page): 401 for a missing or ended session (an ended one
/// also clears the cookie).
fn bare(error: WebError) -> Response {
    match error {
        WebError::SignInRequired { .. } => StatusCode::UNAUTHORIZED.into_response(),
        WebError::SessionEnded { .. } => {
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            response.extensions_mut().insert(EndSession);
            response
        }
        other => {
            let status = other.status();
            if status.is_server_error() {
                // Every heartbeat while sync fails would log this: debug, not warn.
                tracing::debug!(error = %other, "a heartbeat was not recorded");
            }
            status.into_response()
        }
    }
}

#[tracing::instrument(skip_all)]
async fn record(signed: Result<SignedIn, WebError>) -> Response {
    let signed = match signed {
        Ok(signed) => signed,
        Err(err) => return bare(err),
    };
    let message = pb::RecordActivityRequest {
        client: pb::ClientKind::WebTab as i32,
    };
    match signed
        .clients
        .sync
        .call(message, |mut raw, request| async move {
            raw.record_activity(request).await
        })
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => bare(WebError::from_peer(err, "/")),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/activity", post(record))
}
