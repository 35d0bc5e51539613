//! Every way a page can fail, and the page a person then sees. Handlers return
//! `Result<_, WebError>`; [`WebError`] becomes a response carrying an [`ErrorPage`] marker,
//! which the frame middleware (`app.rs`) renders in the request's language. This is the one
//! place a peer's status becomes an HTTP status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mailroom_clients::PeerError;

/// What a page could not do.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not signed in: to the sign-in page, then back to `next`.
    #[error("sign-in required")]
    SignInRequired { next: String },
    /// The session's tokens were refused (dismissed, signed out everywhere, password changed).
    #[error("the session ended")]
    SessionEnded { next: String },
    #[error("not found")]
    NotFound,
    /// Refused by a service or by the console; `message` is the service's sentence when it
    /// is one a person can act on.
    #[error("forbidden: {message}")]
    Forbidden { message: String },
    /// A form field a person can fix, as the service said it.
    #[error("invalid: {message}")]
    Invalid { message: String },
    /// Somebody changed it at the same time (a stale etag), or it already exists.
    #[error("conflict: {message}")]
    Conflict { message: String },
    #[error("the form's CSRF check failed")]
    Csrf,
    /// A form larger than the console accepts, or one that did not arrive in time.
    #[error("the request body is too large or too slow")]
    TooLarge,
    #[error("too many requests")]
    TooMany { retry_after_secs: u64 },
    /// A service did not answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// What kind of error page to render; put on the response by [`WebError::into_response`].
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub key: &'static str,
    pub message: Option<String>,
    pub retry_after_secs: Option<u64>,
}

impl WebError {
    /// A peer's refusal as a page. `next` is where to come back after signing in again.
    pub fn from_peer(error: PeerError, next: &str) -> Self {
        use tonic::Code;
        let (code, message) = match &error {
            PeerError::Refused { code, message, .. } => (*code, message.clone()),
            PeerError::Unavailable { code, message, .. } => (*code, message.clone()),
            PeerError::NotYetKnown { message, .. } => (Code::Unavailable, message.clone()),
            PeerError::Credential(_) => (Code::Unavailable, String::new()),
        };
        match code {
            Code::Unauthenticated => WebError::SessionEnded {
                next: next.to_owned(),
            },
            Code::NotFound => WebError::NotFound,
            Code::PermissionDenied => WebError::Forbidden { message },
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                WebError::Invalid { message }
            }
            Code::AlreadyExists | Code::Aborted => WebError::Conflict { message },
            Code::ResourceExhausted => WebError::TooMany {
                retry_after_secs: retry_after(&message).unwrap_or(60),
            },
            _ => {
                tracing::warn!(error = %error, "a service did not answer the console");
                WebError::Unavailable(error.to_string())
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebError::SignInRequired { .. } | WebError::SessionEnded { .. } => {
                StatusCode::SEE_OTHER
            }
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Forbidden { .. } | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::Conflict { .. } => StatusCode::CONFLICT,
            WebError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// "… try again in 42 seconds" → 42, as identity words its limits.
pub fn retry_after(message: &str) -> Option<u64> {
    let words: Vec<&str> = message.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let unit = w[1].trim_end_matches(|c: char| c.is_ascii_punctuation());
        (unit.starts_with("second") || unit == "s")
            .then(|| w[0].parse::<u64>().ok())
            .flatten()
    })
}

/// `/sign-in?next=<path>`.
pub fn sign_in_location(next: &str, ended: bool) -> String {
    let next = crate::util::safe_next(next).unwrap_or("/");
    let encoded = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
    if ended {
        format!("/sign-in?ended=1&next={encoded}")
    } else {
        format!("/sign-in?next={encoded}")
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let page = match self {
            WebError::SignInRequired { next } => {
                return (status, [(header::LOCATION, sign_in_location(&next, false))])
                    .into_response();
            }
            WebError::SessionEnded { next } => {
                let mut response =
                    (status, [(header::LOCATION, sign_in_location(&next, true))]).into_response();
                response.extensions_mut().insert(crate::session::EndSession);
                return response;
            }
            WebError::NotFound => ErrorPage {
                key: "error-not-found",
                message: None,
                retry_after_secs: None,
            },
            WebError::Forbidden { message } => ErrorPage {
                key: "error-forbidden",
                message: Some(message).filter(|m| !m.is_empty()),
                retry_after_secs: None,
            },
            WebError::Invalid { message } => ErrorPage {
                key: "error-title",
                message: Some(message),
                retry_after_secs: None,
            },
            WebError::Conflict { message } => ErrorPage {
                key: "error-conflict",
                message: Some(message).filter(|m| !m.is_empty()),
                retry_after_secs: None,
            },
            WebError::TooLarge => ErrorPage {
                key: "error-too-large",
                message: None,
                retry_after_secs: None,
            },
            WebError::Csrf => ErrorPage {
                key: "error-csrf",
                message: None,
                retry_after_secs: None,
            },
            WebError::TooMany { retry_after_secs } => ErrorPage {
                key: "error-too-many",
                message: None,
                retry_after_secs: Some(retry_after_secs),
            },
            WebError::Unavailable(_) => ErrorPage {
                key: "error-unavailable",
                message: None,
                retry_after_secs: None,
            },
            WebError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "a page failed");
                ErrorPage {
                    key: "error-internal",
                    message: None,
                    retry_after_secs: None,
                }
            }
        };
        let mut response = status.into_response();
        if let Some(secs) = page.retry_after_secs {
            if let Ok(value) = secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response.extensions_mut().insert(page);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_from_the_services_words() {
        assert_eq!(
            retry_after("too many sign-in attempts; try again in 42 seconds"),
            Some(42)
        );
        assert_eq!(retry_after("slow down"), None);
        assert_eq!(retry_after("resend after 42 s."), Some(42));
    }

    #[test]
    fn sign_in_keeps_only_a_local_next() {
        assert_eq!(
            sign_in_location("/mailboxes?f=a b", false),
            "/sign-in?next=%2Fmailboxes%3Ff%3Da%20b"
        );
        assert_eq!(
            sign_in_location("//evil.example/", false),
            "/sign-in?next=%2F"
        );
    }
}
