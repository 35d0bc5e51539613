//! What every page shows around its content ([`Chrome`]: language, navigation, the CSRF
//! token, the notice), and turning a template into a response.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use mailroom_proto::access::v1 as access_pb;

use crate::assets;
use crate::auth::{Ctx, SignedIn};
use crate::errors::WebError;
use crate::i18n::{Arg, Locale};
use crate::session::now;
use crate::state::AppState;

/// What the signed-in person may reach from the navigation (services still decide each call).
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub admin: bool,
    pub invite: bool,
    pub register_users: bool,
    pub manage_permissions: bool,
}

impl Nav {
    fn code(&self) -> String {
        [
            (self.invite, 'i'),
            (self.register_users, 'r'),
            (self.manage_permissions, 'p'),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| *c)
        .collect()
    }

    fn from_code(code: &str, admin: bool) -> Self {
        Nav {
            admin,
            invite: code.contains('i'),
            register_users: code.contains('r'),
            manage_permissions: code.contains('p'),
        }
    }

    /// The person's organisation permissions, asked once a minute per session.
    pub async fn of(state: &AppState, signed: &SignedIn) -> Nav {
        let session = &signed.session;
        if let Some((code, at)) = &session.nav {
            if now() - at < 60 {
                return Nav::from_code(code, session.admin);
            }
        }
        let subject = Some(access_pb::SubjectRef {
            object: Some(access_pb::ObjectRef {
                r#type: "user".into(),
                id: session.user_id.to_string(),
            }),
            relation: String::new(),
        });
        let org = Some(access_pb::ObjectRef {
            r#type: "org".into(),
            id: session.org_id.to_string(),
        });
        let permissions = ["org.invite", "org.register_users", "org.manage_permissions"];
        let checks = permissions
            .iter()
            .map(|p| access_pb::CheckRequest {
                subject: subject.clone(),
                permission: (*p).into(),
                resource: org.clone(),
                at_least_as_fresh_as: None,
                explain: false,
            })
            .collect();
        let message = access_pb::CheckBulkRequest {
            checks,
            at_least_as_fresh_as: None,
        };
        let answer = signed
            .clients
            .access
            .call(message, |mut raw, request| async move {
                raw.check_bulk(request).await
            })
            .await;
        let nav = match answer {
            Ok(answer) => {
                let allowed = |i: usize| answer.results.get(i).is_some_and(|r| r.allowed);
                Nav {
                    admin: session.admin,
                    invite: allowed(0),
                    register_users: allowed(1),
                    manage_permissions: allowed(2),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "navigation permissions unknown; showing the basics");
                return Nav {
                    admin: session.admin,
                    ..Nav::default()
                };
            }
        };
        if let Err(err) = state.sessions.store_nav(session, &nav.code()).await {
            tracing::warn!(error = %err, "navigation permissions not cached");
        }
        nav
    }
}

/// The frame of every page.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub locale: Locale,
    pub tz: chrono_tz::Tz,
    pub tz_known: bool,
    pub csrf: String,
    /// Whether someone is signed in (then [`Self::nav`] says what they reach).
    pub signed: bool,
    pub nav: Nav,
    pub user_name: String,
    pub notice: Option<String>,
    pub heartbeat_secs: u64,
    pub path: String,
    pub request_id: String,
}

impl Chrome {
    /// For a page nobody needs to be signed in to see.
    pub fn anonymous(ctx: &Ctx) -> Self {
        let notice = ctx
            .notice
            .as_ref()
            .map(|key| format!("notice-{key}"))
            .filter(|key| ctx.locale.has(key))
            .map(|key| ctx.locale.t(&key));
        Chrome {
            locale: ctx.locale,
            tz: ctx.tz,
            tz_known: ctx.tz_known,
            csrf: ctx.csrf.clone(),
            signed: false,
            nav: Nav::default(),
            user_name: String::new(),
            notice,
            heartbeat_secs: 0,
            path: ctx.path.clone(),
            request_id: ctx.request_id.clone(),
        }
    }

    /// For a signed-in person's page: their name and navigation, and the tab's heartbeat.
    pub async fn signed_in(state: &AppState, signed: &SignedIn) -> Self {
        let mut chrome = Chrome::anonymous(&signed.ctx);
        chrome.signed = true;
        chrome.nav = Nav::of(state, signed).await;
        chrome.user_name = signed.session.name.clone();
        chrome.heartbeat_secs = state.config.heartbeat_secs;
        chrome
    }

    /// The sentence `key` in the page's language.
    pub fn t(&self, key: &str) -> String {
        self.locale.t(key)
    }

    /// The sentence `key` with a number (`{ $name }`, choosing the plural form).
    pub fn tn<N: Count>(&self, key: &str, name: &str, n: N) -> String {
        self.locale.t_args(key, &[(name, Arg::Num(n.count()))])
    }

    /// The sentence `key` with a text argument.
    pub fn ts(&self, key: &str, name: &str, value: &str) -> String {
        self.locale.t_args(key, &[(name, Arg::Str(value))])
    }

    /// `aria-current="page"` for the navigation item of `prefix`.
    pub fn current(&self, prefix: &str) -> &'static str {
        let path = self.path.split('?').next().unwrap_or("");
        let here = if prefix == "/" {
            path == "/"
        } else {
            path == prefix || path.starts_with(&format!("{prefix}/"))
        };
        if here {
            "page"
        } else {
            "false"
        }
    }

    pub fn lang(&self) -> &'static str {
        self.locale.tag()
    }

    /// Whether the page is shown in this language (for the switch's `selected`).
    pub fn is_lang(&self, tag: &str) -> bool {
        self.locale.tag() == tag
    }

    /// A static file's address, named by its content so it can be cached for ever.
    pub fn asset(&self, name: &str) -> String {
        assets::url(name)
    }

    /// A time in the viewer's zone and language, e.g. `4 Dec 2026, 14:05`.
    pub fn time(&self, ts: &Option<prost_types::Timestamp>) -> String {
        crate::timefmt::format(ts.as_ref(), self.tz, self.locale)
    }

    /// The same time as RFC 3339, for `<time datetime>`.
    pub fn time_iso(&self, ts: &Option<prost_types::Timestamp>) -> String {
        crate::timefmt::iso(ts.as_ref())
    }

    /// The zone's name, for "times in Europe/Moscow".
    pub fn tz_name(&self) -> &'static str {
        self.tz.name()
    }
}

/// A number a sentence counts, by value or by reference (templates pass references).
pub trait Count {
    fn count(&self) -> i64;
}

macro_rules! count_for {
    ($($t:ty),*) => {$(
        impl Count for $t {
            fn count(&self) -> i64 {
                i64::try_from(*self).unwrap_or(i64::MAX)
            }
        }
    )*};
}
count_for!(i32, i64, u32, u64, usize);

impl<T: Count> Count for &T {
    fn count(&self) -> i64 {
        (**self).count()
    }
}

/// A rendered page, 200.
pub fn render<T: Template>(template: &T) -> Result<Response, WebError> {
    render_status(StatusCode::OK, template)
}

/// A rendered page with `status` (a form shown again with its errors: 422).
pub fn render_status<T: Template>(status: StatusCode, template: &T) -> Result<Response, WebError> {
    let html = template
        .render()
        .map_err(|e| WebError::Internal(anyhow::anyhow!("template: {e}")))?;
    Ok((status, Html(html)).into_response())
}

/// 303 to `location` (after a POST).
pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, location.to_owned())],
    )
        .into_response()
}
