//! The department tree's admin pages (part E): `/departments` (the tree with each head, and a
//! form for a new department), `/departments/{id}` (rename, move, set or clear the head by
//! their address) and deleting an empty department. Identity decides who may (admins) and
//! refuses cycles and non-empty deletions in its own words, which the form shows.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use mailroom_proto::identity::v1 as pb;
use serde::Deserialize;

use crate::auth::SignedIn;
use crate::errors::WebError;
use crate::page::{render_status, see_other, Chrome};
use crate::pages::people::{all_departments, find_by_email, head_names, tree, DeptNode};
use crate::state::AppState;

/// A department's form, as filled in.
#[derive(Deserialize, Default, Clone)]
struct DeptForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    parent_id: String,
    /// The head's login (or contact) address; empty for none.
    #[serde(default)]
    head_email: String,
}

#[derive(Template)]
#[template(path = "people/departments.html")]
struct DepartmentsPage {
    chrome: Chrome,
    tree: Vec<DeptNode>,
    form: DeptForm,
    error: Option<String>,
}

impl DepartmentsPage {
    fn indent(&self, depth: &usize) -> String {
        "\u{2003}".repeat(*depth)
    }
    fn parent_selected(&self, id: &str) -> bool {
        self.form.parent_id == id
    }
}

#[derive(Template)]
#[template(path = "people/department.html")]
struct DepartmentPage {
    chrome: Chrome,
    id: String,
    current_name: String,
    head_name: String,
    /// Departments it may move under (not itself nor its subtree).
    parents: Vec<DeptNode>,
    form: DeptForm,
    error: Option<String>,
}

impl DepartmentPage {
    fn indent(&self, depth: &usize) -> String {
        "\u{2003}".repeat(*depth)
    }
    fn parent_selected(&self, id: &str) -> bool {
        self.form.parent_id == id
    }
}

async fn departments_page(
    state: &AppState,
    signed: &SignedIn,
    form: DeptForm,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let departments = all_departments(signed).await?;
    let names = head_names(signed, &departments, &[]).await;
    render_status(
        status,
        &DepartmentsPage {
            chrome: Chrome::signed_in(state, signed).await,
            tree: tree(&departments, &names),
            form,
            error,
        },
    )
}

#[tracing::instrument(skip_all)]
async fn list(State(state): State<AppState>, signed: SignedIn) -> Result<Response, WebError> {
    departments_page(&state, &signed, DeptForm::default(), None, StatusCode::OK).await
}

/// The head's id for `email`; Err(sentence) when nobody holds it.
async fn head_of(signed: &SignedIn, email: &str) -> Result<Result<String, String>, WebError> {
    if email.trim().is_empty() {
        return Ok(Ok(String::new()));
    }
    Ok(match find_by_email(signed, email).await? {
        Some(user) => Ok(user.id),
        None => Err(signed.ctx.locale.t_args(
            "dept-no-such-person",
            &[("email", crate::i18n::Arg::Str(email.trim()))],
        )),
    })
}

#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    signed: SignedIn,
    Form(form): Form<DeptForm>,
) -> Result<Response, WebError> {
    let head = match head_of(&signed, &form.head_email).await? {
        Ok(head) => head,
        Err(sentence) => {
            return departments_page(
                &state,
                &signed,
                form,
                Some(sentence),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let message = pb::CreateDepartmentRequest {
        department: Some(pb::Department {
            name: form.name.trim().to_owned(),
            parent_id: form.parent_id.trim().to_owned(),
            head_user_id: head,
            ..Default::default()
        }),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.create_department(request).await
        })
        .await;
    match answer {
        Ok(_) => Ok(see_other("/departments?notice=dept-created")),
        Err(err) => match WebError::from_peer(err, &signed.ctx.path) {
            WebError::Invalid { message } | WebError::Conflict { message } => {
                departments_page(
                    &state,
                    &signed,
                    form,
                    Some(message),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            other => Err(other),
        },
    }
}

/// The department `id` and the tree, for its page.
async fn department_page(
    state: &AppState,
    signed: &SignedIn,
    id: &str,
    form: Option<DeptForm>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let departments = all_departments(signed).await?;
    let Some(department) = departments.iter().find(|d| d.id == id).cloned() else {
        return Err(WebError::NotFound);
    };
    let names: HashMap<String, String> =
        head_names(signed, std::slice::from_ref(&department), &[]).await;
    let nodes = tree(&departments, &names);
    // Not itself, nor anything below it.
    let mut parents = Vec::new();
    let mut skipping: Option<usize> = None;
    for node in nodes {
        if let Some(depth) = skipping {
            if node.depth > depth {
                continue;
            }
            skipping = None;
        }
        if node.id == department.id {
            skipping = Some(node.depth);
            continue;
        }
        parents.push(node);
    }
    let head_email = if department.head_user_id.is_empty() {
        String::new()
    } else {
        match department.head_user_id.parse() {
            Ok(uid) => signed
                .clients
                .identity
                .user(uid)
                .await
                .map(|u| u.login_email)
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let form = form.unwrap_or_else(|| DeptForm {
        name: department.name.clone(),
        parent_id: department.parent_id.clone(),
        head_email,
    });
    render_status(
        status,
        &DepartmentPage {
            chrome: Chrome::signed_in(state, signed).await,
            id: department.id.clone(),
            current_name: department.name.clone(),
            head_name: names
                .get(&department.head_user_id)
                .cloned()
                .unwrap_or_default(),
            parents,
            form,
            error,
        },
    )
}

#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    department_page(&state, &signed, &id, None, None, StatusCode::OK).await
}

#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DeptForm>,
) -> Result<Response, WebError> {
    let head = match head_of(&signed, &form.head_email).await? {
        Ok(head) => head,
        Err(sentence) => {
            return department_page(
                &state,
                &signed,
                &id,
                Some(form),
                Some(sentence),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let message = pb::UpdateDepartmentRequest {
        department: Some(pb::Department {
            id: id.clone(),
            name: form.name.trim().to_owned(),
            parent_id: form.parent_id.trim().to_owned(),
            head_user_id: head,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into(), "parent_id".into(), "head_user_id".into()],
        }),
    };
    let answer = signed
        .clients
        .identity
        .call(message, |mut raw, request| async move {
            raw.update_department(request).await
        })
        .await;
    match answer {
        Ok(_) => Ok(see_other("/departments?notice=dept-saved")),
        Err(err) => match WebError::from_peer(err, &signed.ctx.path) {
            WebError::Invalid { message } | WebError::Conflict { message } => {
                department_page(
                    &state,
                    &signed,
                    &id,
                    Some(form),
                    Some(message),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            other => Err(other),
        },
    }
}

#[tracing::instrument(skip_all)]
async fn delete(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let answer = signed
        .clients
        .identity
        .call(
            pb::DeleteDepartmentRequest { id: id.clone() },
            |mut raw, request| async move { raw.delete_department(request).await },
        )
        .await;
    match answer {
        Ok(_) => Ok(see_other("/departments?notice=dept-deleted")),
        Err(err) => match WebError::from_peer(err, &signed.ctx.path) {
            WebError::Invalid { message } | WebError::Conflict { message } => {
                department_page(
                    &state,
                    &signed,
                    &id,
                    None,
                    Some(message),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            other => Err(other),
        },
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/departments", get(list).post(create))
        .route("/departments/{id}", get(show).post(update))
        .route("/departments/{id}/delete", post(delete))
}
