//! Where a page's time went, as a `Server-Timing` header (`session;dur=0.4, list;dur=6.1, …`)
//! when the console is configured to tell (`MAILROOM_WEB__SERVER_TIMING`; off by default, as
//! it tells anyone signed in how long the services took). The benchmark reads it; a browser's
//! developer tools show it beside the request.

use std::time::Instant;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// The phases of one request, each from the end of the one before.
#[derive(Debug)]
pub struct Timing {
    on: bool,
    last: Instant,
    phases: Vec<(&'static str, f64)>,
}

impl Timing {
    /// Starts counting at `since` (the frame's start, so the first phase is what ran before
    /// the page: the session's load and, now and then, a token's refresh).
    pub fn new(on: bool, since: Instant) -> Self {
        Timing {
            on,
            last: since,
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name` now.
    pub fn mark(&mut self, name: &'static str) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        self.phases
            .push((name, now.duration_since(self.last).as_secs_f64() * 1e3));
        self.last = now;
    }

    /// Adds a phase that ran alongside others (it does not move the start of the next).
    pub fn add(&mut self, name: &'static str, took: std::time::Duration) {
        if self.on {
            self.phases.push((name, took.as_secs_f64() * 1e3));
        }
    }

    /// The header's value, `name;dur=ms` joined by commas.
    pub fn header_value(&self) -> String {
        self.phases
            .iter()
            .map(|(name, ms)| format!("{name};dur={ms:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `response` with the header, when on.
    pub fn apply(&self, mut response: Response) -> Response {
        if self.on && !self.phases.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&self.header_value()) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("server-timing"), value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_each_other_and_stay_silent_when_off() {
        let mut t = Timing::new(true, Instant::now());
        t.mark("a");
        t.mark("b");
        t.add("c", std::time::Duration::from_millis(2));
        let value = t.header_value();
        assert!(value.ends_with(", c;dur=2.00"), "{value}");
        assert!(value.starts_with("a;dur="), "{value}");
        assert!(value.contains(", b;dur="), "{value}");
        let mut off = Timing::new(false, Instant::now());
        off.mark("a");
        assert_eq!(off.header_value(), "");
        let response = off.apply(Response::new(axum::body::Body::empty()));
        assert!(response.headers().get("server-timing").is_none());
    }
}
