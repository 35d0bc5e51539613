//! The console's static files (CSS and the few script modules), compiled in and served under
//! `/static/{hash}/{name}`: named by their content, so browsers keep them for a year and a
//! new release is fetched at once. A part adding a file adds one line to [`FILES`].

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../static/app.css"),
    ),
    (
        "js/enhance.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/js/enhance.js"),
    ),
    (
        "js/heartbeat.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/js/heartbeat.js"),
    ),
    (
        "js/tz.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../static/js/tz.js"),
    ),
];

struct Asset {
    content_type: &'static str,
    bytes: &'static [u8],
    hash: String,
}

fn table() -> &'static HashMap<&'static str, Asset> {
    static TABLE: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, content_type, bytes)| {
                let hash = crate::util::sha256_hex(bytes)[..12].to_owned();
                (
                    *name,
                    Asset {
                        content_type,
                        bytes,
                        hash,
                    },
                )
            })
            .collect()
    })
}

/// `/static/{hash}/{name}`; a name not in the table is logged and linked as is (404).
pub fn url(name: &str) -> String {
    match table().get(name) {
        Some(asset) => format!("/static/{}/{name}", asset.hash),
        None => {
            tracing::error!(
                name,
                "a template links a static file that is not compiled in"
            );
            format!("/static/missing/{name}")
        }
    }
}

/// Every static file's name and size (for the page-weight benchmark).
pub fn sizes() -> Vec<(&'static str, usize)> {
    FILES.iter().map(|(n, _, b)| (*n, b.len())).collect()
}

pub async fn serve(Path((hash, name)): Path<(String, String)>) -> Response {
    let Some(asset) = table().get(name.as_str()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // An old page asking for an old hash gets today's file, not cached for long.
    let cache = if hash == asset.hash {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=60"
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, cache),
        ],
        asset.bytes,
    )
        .into_response()
}
