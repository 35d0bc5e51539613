//! The start page of a signed-in person: where to go from here.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::page::{render, Chrome};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
}

#[tracing::instrument(skip_all)]
async fn home(State(state): State<AppState>, signed: SignedIn) -> Result<Response, WebError> {
    let chrome = Chrome::signed_in(&state, &signed).await;
    render(&HomePage { chrome })
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(home))
}
