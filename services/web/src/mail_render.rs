//! Mail as the console shows it: a raw RFC 5322 message (GetMessageBody) parsed with
//! `mail-parser`, its headers as text, and its body made harmless with `ammonia` for the
//! sandboxed mail frame (design §4.4).
//!
//! What the sanitiser keeps and drops, and why:
//! - No script, `style` element, form, input, iframe, object, embed, svg, math, meta, base,
//!   link or title: ammonia keeps only its allow-list of tags, and the content of the
//!   dangerous ones (script, style, form, svg, …) goes with them.
//! - `style` attributes are **kept, filtered** to typography and box properties (colour,
//!   font, margin, padding, border, width, alignment, …): most mail is laid out with inline
//!   styles and is unreadable without them, and the frame's CSP allows inline style for that
//!   reason. Nothing that can name a URL (`background`, `background-image`, `list-style`,
//!   `content`, `cursor`, `border-image`, …) and nothing that can lift content out of the
//!   flow (`position`, `z-index`, `transform`) passes, so a style can neither fetch (a
//!   beacon) nor overlay.
//! - URLs outside `<img src>`: `http`, `https`, `mailto` only (read as a browser reads them:
//!   tabs, newlines and leading controls removed first). Relative URLs are dropped, except
//!   the same-origin addresses of this message's own parts.
//! - `<img src>`: `cid:` (this message's image, below), `data:image/{png,jpeg,gif,webp}`
//!   (never SVG), or a remote address (below); anything else — other `data:`, `mailto:`,
//!   relative addresses the sender wrote — is dropped.
//! - Links get `rel="noopener noreferrer nofollow"` and `target="_blank"`.
//! - `<img>` pointing at `cid:` becomes the image itself as a `data:` URL in the frame (its
//!   sandboxed, opaque origin sends no cookies, so a same-origin address would answer "sign
//!   in"), or, elsewhere and for images over 2 MB, this message's part address
//!   (`…/{uid}/part/{n}`, served only for image parts, never SVG). A remote image (`http(s):`, `//host`)
//!   loses its address and is counted, so the page can say "N remote images blocked"; when
//!   the person asked to see them, `https` ones (and `http` ones upgraded to `https`) stay and
//!   the frame's CSP lets `https:` images load for that one response.
//! - `text/plain` is escaped into a `<pre>`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mail_parser::{Address, MessageParser, MimeHeaders, PartType};

pub use mail_parser::Message;

/// The frame's CSP when remote images stay blocked.
pub const FRAME_CSP: &str = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox";
/// The frame's CSP after the person asked to see remote images.
pub const FRAME_CSP_WITH_IMAGES: &str = "default-src 'none'; img-src 'self' data: https:; style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox";

/// The frame's CSP.
pub fn frame_csp(show_remote_images: bool) -> &'static str {
    if show_remote_images {
        FRAME_CSP_WITH_IMAGES
    } else {
        FRAME_CSP
    }
}

/// Style properties a mail may use: layout and typography, nothing that takes a URL or
/// positions content over other content.
const STYLE_PROPERTIES: &[&str] = &[
    "color",
    "background-color",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "font-variant",
    "letter-spacing",
    "line-height",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "white-space",
    "word-spacing",
    "word-break",
    "overflow-wrap",
    "vertical-align",
    "direction",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-radius",
    "border-collapse",
    "border-spacing",
    "width",
    "min-width",
    "max-width",
    "height",
    "min-height",
    "max-height",
    "display",
    "float",
    "clear",
    "table-layout",
    "list-style-type",
];

/// Tags whose content goes with them (not just the tag).
const CLEAN_CONTENT_TAGS: &[&str] = &[
    "script", "style", "title", "form", "iframe", "object", "embed", "applet", "svg", "math",
    "noscript", "noembed", "noframes", "template", "textarea", "select", "frameset",
];

/// The headers the message page shows.
#[derive(Debug, Clone, Default)]
pub struct MailHeaders {
    pub subject: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// The Date header, seconds since the epoch.
    pub date: Option<i64>,
}

/// A body made harmless, with what was taken out that a person may want back.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// Sanitised HTML, to go inside the frame's `<body>`.
    pub html: String,
    /// Remote images whose addresses were removed.
    pub remote_images_blocked: usize,
}

/// The message, parsed; `None` when the bytes are not a message at all.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    let Some(address) = address else {
        return Vec::new();
    };
    address
        .iter()
        .map(|a| {
            let email = a.address.as_deref().unwrap_or("");
            match a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                Some(name) if !email.is_empty() => format!("{name} <{email}>"),
                Some(name) => name.to_owned(),
                None => email.to_owned(),
            }
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Subject, From, To, Cc and Date, as text (the page escapes them).
pub fn headers(message: &Message<'_>) -> MailHeaders {
    MailHeaders {
        subject: message.subject().unwrap_or("").trim().to_owned(),
        from: addresses(message.from()),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        date: message.date().map(|d| d.to_timestamp()),
    }
}

/// The content id of a part, without its angle brackets.
fn content_id_of(part: &mail_parser::MessagePart<'_>) -> Option<String> {
    let id = part.content_id()?.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    (!id.is_empty()).then(|| id.to_owned())
}

/// The image type of part `n` if it is an image the console may serve (not SVG, which is a
/// document that can carry script), with its bytes.
pub fn image_part<'m>(message: &'m Message<'_>, n: usize) -> Option<(String, &'m [u8])> {
    let part = message.parts.get(n)?;
    let bytes: &[u8] = match &part.body {
        PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
        _ => return None,
    };
    let ct = part.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("image") {
        return None;
    }
    let subtype = ct.subtype()?.to_ascii_lowercase();
    let allowed = ["png", "jpeg", "jpg", "gif", "webp", "bmp", "avif"];
    if !allowed.contains(&subtype.as_str()) {
        return None;
    }
    let subtype = if subtype == "jpg" {
        "jpeg".into()
    } else {
        subtype
    };
    Some((format!("image/{subtype}"), bytes))
}

/// Inline images at most this large go into the frame as `data:` URLs; larger ones keep
/// their part address.
const INLINE_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Where the frame finds the image of part `n`: in the document itself (`data:`), or at its
/// part address.
fn image_url(message: &Message<'_>, n: usize, part_base: &str, inline: bool) -> Option<String> {
    let (content_type, bytes) = image_part(message, n)?;
    if inline && bytes.len() <= INLINE_MAX_BYTES {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        Some(format!("data:{content_type};base64,{data}"))
    } else {
        Some(format!("{part_base}{n}"))
    }
}

/// Content id → the image's URL, for the image parts [`image_part`] would serve.
fn cid_map(message: &Message<'_>, part_base: &str, inline: bool) -> HashMap<String, String> {
    message
        .parts
        .iter()
        .enumerate()
        .filter_map(|(n, part)| {
            let id = content_id_of(part)?;
            Some((id, image_url(message, n, part_base, inline)?))
        })
        .collect()
}

/// `&`, `<`, `>`, `"`, `'` as entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn is_remote(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")
}

fn is_inline_image_data(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    ["png", "jpeg", "jpg", "gif", "webp"].iter().any(|t| {
        lower.starts_with(&format!("data:image/{t};"))
            || lower.starts_with(&format!("data:image/{t},"))
    })
}

/// Schemes a URL outside `<img src>` may use.
const NON_IMG_SCHEMES: &[&str] = &["http", "https", "mailto"];

/// Attributes that hold a URL.
fn is_url_attribute(attribute: &str) -> bool {
    matches!(
        attribute,
        "href"
            | "src"
            | "cite"
            | "action"
            | "formaction"
            | "ping"
            | "poster"
            | "background"
            | "longdesc"
            | "srcset"
    )
}

/// A URL as a browser's parser reads it: leading/trailing C0 controls and spaces dropped,
/// tabs and newlines anywhere removed (so `d\tata:` is `data:`).
fn url_cleaned(url: &str) -> String {
    url.trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// [`url_cleaned`], lower-cased.
fn url_normalised(url: &str) -> String {
    url_cleaned(url).to_ascii_lowercase()
}

/// The scheme of a normalised URL, `None` when it is relative.
fn scheme_of(normalised: &str) -> Option<String> {
    let (scheme, _) = normalised.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then(|| scheme.to_owned())
}

/// What becomes of an `<img src>`: `cid:` → this message's image (or nothing), an allowed
/// `data:image/…` stays, a remote address stays only when asked for (and is counted when
/// not); anything else (`data:` of another type, SVG, `mailto:`, relative, …) goes.
fn img_src<'v>(
    value: &'v str,
    cids: &HashMap<String, String>,
    show_remote_images: bool,
    blocked: &AtomicUsize,
) -> Option<Cow<'v, str>> {
    let cleaned = url_cleaned(value);
    // ASCII lower-casing keeps byte offsets, so `cleaned[n..]` matches `lower[n..]`.
    let lower = cleaned.to_ascii_lowercase();
    if lower.starts_with("cid:") {
        // Content ids are case-sensitive: the id keeps its spelling.
        let id = percent_encoding::percent_decode_str(&cleaned[4..]).decode_utf8_lossy();
        return cids.get(id.as_ref()).map(|url| Cow::Owned(url.clone()));
    }
    if is_inline_image_data(&lower) {
        return Some(Cow::Borrowed(value));
    }
    if is_remote(&lower) {
        if !show_remote_images {
            blocked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        return Some(if lower.starts_with("http:") {
            Cow::Owned(format!("https:{}", &cleaned[5..]))
        } else if lower.starts_with("//") {
            Cow::Owned(format!("https:{cleaned}"))
        } else {
            Cow::Owned(cleaned)
        });
    }
    None
}

/// Relative URLs: only the addresses the sanitiser wrote for the message's own parts.
struct OwnParts(String);

impl<'a> ammonia::UrlRelativeEvaluate<'a> for OwnParts {
    fn evaluate<'url>(&self, url: &'url str) -> Option<Cow<'url, str>> {
        url.strip_prefix(self.0.as_str())
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| Cow::Borrowed(url))
    }
}

/// The sanitiser for one message: `part_base` is the same-origin address its parts are
/// served under (`/mailboxes/{id}/mail/{folder}/{uid}/part/`).
fn sanitiser(
    cids: HashMap<String, String>,
    part_base: String,
    show_remote_images: bool,
    blocked: Arc<AtomicUsize>,
) -> ammonia::Builder<'static> {
    let mut builder = ammonia::Builder::default();
    builder
        .add_tags(["font"])
        .add_tag_attributes("font", ["color", "face", "size"])
        .add_tag_attributes(
            "table",
            [
                "border",
                "cellpadding",
                "cellspacing",
                "width",
                "height",
                "bgcolor",
            ],
        )
        .add_tag_attributes("td", ["bgcolor", "nowrap"])
        .add_tag_attributes("th", ["bgcolor", "nowrap"])
        .add_tag_attributes("tr", ["bgcolor", "valign"])
        .add_generic_attributes(["style", "dir", "align"])
        .filter_style_properties(STYLE_PROPERTIES.iter().copied().collect())
        .clean_content_tags(CLEAN_CONTENT_TAGS.iter().copied().collect())
        // ammonia checks schemes before the attribute filter runs: `cid` and `data` are here
        // only so `<img src>` reaches the filter, which maps `cid:` and keeps allowed image
        // `data:` for `<img src>` alone; every other URL it lets be http/https/mailto only.
        .url_schemes(
            ["http", "https", "mailto", "cid", "data"]
                .into_iter()
                .collect::<HashSet<_>>(),
        )
        .link_rel(Some("noopener noreferrer nofollow"))
        .set_tag_attribute_value("a", "target", "_blank")
        .strip_comments(true)
        .url_relative(ammonia::UrlRelative::Custom(Box::new(OwnParts(part_base))))
        .attribute_filter(move |element, attribute, value| {
            if element == "img" && attribute == "src" {
                return img_src(value, &cids, show_remote_images, &blocked);
            }
            if !is_url_attribute(attribute) {
                return Some(Cow::Borrowed(value));
            }
            match scheme_of(&url_normalised(value)) {
                // Relative: ammonia's `OwnParts` decides.
                None => Some(Cow::Borrowed(value)),
                Some(s) if NON_IMG_SCHEMES.contains(&s.as_str()) => Some(Cow::Borrowed(value)),
                Some(_) => None,
            }
        });
    builder
}

/// How a body is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The person asked to see remote images (for this view).
    pub show_remote_images: bool,
    /// Inline (`cid:`) images go into the document as `data:` URLs (the frame: its
    /// sandboxed, opaque origin sends no cookies, so a part address would not load there);
    /// otherwise they point at their part addresses.
    pub inline_images: bool,
}

/// Sanitises one HTML body.
pub fn sanitise_html(
    html: &str,
    message: Option<&Message<'_>>,
    part_base: &str,
    options: Options,
) -> Rendered {
    let show_remote_images = options.show_remote_images;
    let blocked = Arc::new(AtomicUsize::new(0));
    let cids = message
        .map(|m| cid_map(m, part_base, options.inline_images))
        .unwrap_or_default();
    let clean = sanitiser(
        cids,
        part_base.to_owned(),
        show_remote_images,
        blocked.clone(),
    )
    .clean(html)
    .to_string();
    Rendered {
        html: clean,
        remote_images_blocked: blocked.load(Ordering::Relaxed),
    }
}

/// Plain text as an escaped `<pre>`.
pub fn text_as_html(text: &str) -> String {
    format!("<pre class=\"mail-text\">{}</pre>", escape(text))
}

/// The body to show: each HTML part sanitised, each text part escaped, inline images as
/// `options` say; the text parts when there is no HTML.
pub fn body(message: &Message<'_>, part_base: &str, options: Options) -> Rendered {
    let ids = if message.html_body.is_empty() {
        &message.text_body
    } else {
        &message.html_body
    };
    let mut out = Rendered::default();
    for &id in ids {
        let id = id as usize;
        let Some(part) = message.parts.get(id) else {
            continue;
        };
        match &part.body {
            PartType::Html(html) => {
                let r = sanitise_html(html, Some(message), part_base, options);
                out.html.push_str(&r.html);
                out.remote_images_blocked += r.remote_images_blocked;
            }
            PartType::Text(text) => out.html.push_str(&text_as_html(text)),
            PartType::Binary(_) | PartType::InlineBinary(_) => {
                if let Some(url) = image_url(message, id, part_base, options.inline_images) {
                    out.html
                        .push_str(&format!("<p><img src=\"{}\" alt=\"\"></p>", escape(&url)));
                }
            }
            _ => {}
        }
    }
    out
}

/// The whole document the frame serves around a rendered body.
pub fn frame_document(body_html: &str, title: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>body{{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;margin:.8rem;color:#1f2328;background:#fff;overflow-wrap:anywhere}}pre.mail-text{{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9rem}}img{{max-width:100%;height:auto}}</style></head><body>{}</body></html>\n",
        escape(title),
        body_html
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/mailboxes/m1/mail/INBOX/7/part/";

    fn clean(html: &str) -> Rendered {
        sanitise_html(html, None, BASE, Options::default())
    }

    const SHOW: Options = Options {
        show_remote_images: true,
        inline_images: false,
    };

    #[test]
    fn scripts_and_event_handlers_are_gone() {
        let r = clean(
            r#"<p onclick="alert(1)">hi</p><script>alert(2)</script><img src=x onerror="alert(3)"><a href="javascript:alert(4)">click</a><body onload=alert(5)>"#,
        );
        let h = r.html.to_ascii_lowercase();
        assert!(!h.contains("script"), "{h}");
        assert!(!h.contains("alert"), "{h}");
        assert!(
            !h.contains("onerror") && !h.contains("onclick") && !h.contains("onload"),
            "{h}"
        );
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("click"), "the link's text stays: {h}");
    }

    #[test]
    fn meta_base_form_iframe_object_svg_math_are_gone() {
        let r = clean(
            r#"<meta http-equiv="refresh" content="0;url=https://evil.example/"><base href="https://evil.example/"><form action="https://evil.example/steal" method="post"><label>Password</label><input name="pw" type="password"><button>Log in</button></form><iframe src="https://evil.example/"></iframe><object data="https://evil.example/x.swf"></object><embed src="https://evil.example/e"><svg><script>alert(1)</script><image href="https://evil.example/s.png"/></svg><math><mtext>m</mtext></math><link rel="stylesheet" href="https://evil.example/s.css"><p>after</p>"#,
        );
        let h = r.html.to_ascii_lowercase();
        for gone in [
            "<meta",
            "refresh",
            "<base",
            "<form",
            "<input",
            "password",
            "<iframe",
            "<object",
            "<embed",
            "<svg",
            "<math",
            "<link",
            "evil.example",
        ] {
            assert!(!h.contains(gone), "`{gone}` survived: {h}");
        }
        assert!(h.contains("<p>after</p>"), "{h}");
    }

    #[test]
    fn style_elements_go_and_style_attributes_keep_only_safe_properties() {
        let r = clean(
            r#"<style>body{background:url(https://beacon.example/css)}</style><div style="position:fixed;top:0;left:0;width:100%;height:100%;z-index:99;background:url(https://beacon.example/bg);background-image:url('https://beacon.example/i');color:red;padding:4px">x</div><p style="list-style-image:url(https://beacon.example/l);cursor:url(https://beacon.example/c),auto;font-weight:bold">y</p>"#,
        );
        let h = r.html.to_ascii_lowercase();
        assert!(!h.contains("<style"), "{h}");
        assert!(!h.contains("url("), "{h}");
        assert!(!h.contains("beacon"), "{h}");
        assert!(!h.contains("position") && !h.contains("z-index"), "{h}");
        assert!(h.contains("color:red"), "safe properties stay: {h}");
        assert!(h.contains("font-weight:bold"), "{h}");
    }

    #[test]
    fn remote_images_are_blocked_and_counted_until_asked_for() {
        let html = r#"<img src="https://tracker.example/p.gif" alt="a"><img src="http://tracker.example/q.gif"><img src="//tracker.example/r.gif"><img src="data:image/png;base64,iVBORw0KGgo=" alt="d">"#;
        let r = clean(html);
        assert_eq!(r.remote_images_blocked, 3, "{}", r.html);
        assert!(!r.html.contains("tracker.example"), "{}", r.html);
        assert!(
            r.html.contains("data:image/png"),
            "inline data images stay: {}",
            r.html
        );
        let shown = sanitise_html(html, None, BASE, SHOW);
        assert_eq!(shown.remote_images_blocked, 0);
        assert!(
            shown.html.contains("https://tracker.example/p.gif"),
            "{}",
            shown.html
        );
        assert!(
            shown.html.contains("https://tracker.example/q.gif"),
            "http is upgraded: {}",
            shown.html
        );
        assert!(
            shown.html.contains("https://tracker.example/r.gif"),
            "{}",
            shown.html
        );
    }

    #[test]
    fn links_open_apart_and_tell_nothing() {
        let r = clean(
            r#"<a href="https://example.com/x">x</a><a href="mailto:a@b.example">m</a><a href="/sign-out">s</a><a href="data:text/html,hi">d</a>"#,
        );
        let h = &r.html;
        assert!(h.contains(r#"href="https://example.com/x""#), "{h}");
        assert!(h.contains(r#"rel="noopener noreferrer nofollow""#), "{h}");
        assert!(h.contains(r#"target="_blank""#), "{h}");
        assert!(h.contains("mailto:a@b.example"), "{h}");
        assert!(!h.contains("/sign-out"), "relative links go: {h}");
        assert!(!h.contains("data:text"), "{h}");
    }

    #[test]
    fn img_src_keeps_only_cid_allowed_data_and_remote() {
        let r = sanitise_html(
            concat!(
                r#"<img src="data:image/svg+xml;base64,PHN2Zz4=" alt="s">"#,
                r#"<img src="data:text/html,hi" alt="html">"#,
                r#"<img src="d&#9;ata:image/svg+xml,x" alt="t">"#,
                r#"<img src="mailto:a@b.example" alt="mail">"#,
                r#"<img src="ftp://x.example/a.png" alt="ftp">"#,
                r#"<img src="/mailboxes/m1/mail/INBOX/7/part/2" alt="own">"#,
                r#"<img src="data:image/gif;base64,R0lGOD=" alt="gif">"#,
                r#"<img src="https://x.example/Pic.png" alt="remote">"#,
            ),
            None,
            BASE,
            SHOW,
        );
        let h = &r.html;
        assert!(!h.contains("svg"), "{h}");
        assert!(!h.contains("text/html"), "{h}");
        assert!(!h.contains("mailto:"), "{h}");
        assert!(!h.contains("ftp:"), "{h}");
        assert!(!h.contains("/mailboxes/"), "{h}");
        assert!(h.contains(r#"src="data:image/gif;base64,R0lGOD=""#), "{h}");
        assert!(h.contains(r#"src="https://x.example/Pic.png""#), "{h}");
        assert_eq!(h.matches(" src=").count(), 2, "{h}");
    }

    #[test]
    fn non_img_urls_are_http_https_mailto_only() {
        let r = clean(concat!(
            r#"<a href="https://example.com/x">ok</a>"#,
            r#"<a href="da&#10;ta:text/html,hi">d</a>"#,
            r#"<a href="cid:logo@x">c</a>"#,
            r#"<a href="ftp://example.com/f">f</a>"#,
            r#"<a href="tel:+100">t</a>"#,
            r#"<blockquote cite="data:text/plain,q">q</blockquote>"#,
        ));
        let h = &r.html;
        assert!(h.contains(r#"href="https://example.com/x""#), "{h}");
        assert_eq!(h.matches("href=").count(), 1, "{h}");
        assert!(!h.contains("cite="), "{h}");
    }

    #[test]
    fn only_this_messages_part_addresses_pass_as_relative() {
        let r = clean(
            r#"<img src="/mailboxes/other/mail/INBOX/1/part/2"><img src="/mailboxes/m1/mail/INBOX/7/part/2x">"#,
        );
        assert!(!r.html.contains("/mailboxes/"), "{}", r.html);
    }

    const RELATED: &str = "From: Anna <anna@example.com>\r\nTo: Boris <boris@example.com>\r\nSubject: Logo\r\nDate: Fri, 4 Dec 2026 14:05:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Our logo:</p><img src=\"cid:logo@x\" alt=\"logo\"><img src=\"cid:missing@x\"><img src=\"cid:doc@x\">\r\n--b1\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b1\r\nContent-Type: image/svg+xml\r\nContent-ID: <doc@x>\r\n\r\n<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>\r\n--b1--\r\n";

    #[test]
    fn cid_images_become_this_messages_part_addresses() {
        let message = parse(RELATED.as_bytes()).expect("parses");
        let r = body(&message, BASE, Options::default());
        let logo = message
            .parts
            .iter()
            .position(|p| content_id_of(p).as_deref() == Some("logo@x"))
            .expect("logo part");
        assert!(
            r.html.contains(&format!(r#"src="{BASE}{logo}""#)),
            "{}",
            r.html
        );
        assert!(!r.html.contains("cid:"), "{}", r.html);
        assert_eq!(r.remote_images_blocked, 0);
        let inlined = body(
            &message,
            BASE,
            Options {
                inline_images: true,
                ..Options::default()
            },
        );
        assert!(
            inlined
                .html
                .contains(r#"src="data:image/png;base64,iVBORw0KGgo=""#),
            "the frame carries the image itself: {}",
            inlined.html
        );
        assert!(!inlined.html.contains(BASE), "{}", inlined.html);
        assert!(!inlined.html.contains("svg"), "{}", inlined.html);
        let (ct, bytes) = image_part(&message, logo).expect("an image part");
        assert_eq!(ct, "image/png");
        assert!(bytes.starts_with(b"\x89PNG"));
        let svg = message
            .parts
            .iter()
            .position(|p| content_id_of(p).as_deref() == Some("doc@x"))
            .expect("svg part");
        assert!(image_part(&message, svg).is_none(), "SVG is never served");
        assert!(image_part(&message, 0).is_none(), "nor a multipart");
        let h = headers(&message);
        assert_eq!(h.subject, "Logo");
        assert_eq!(h.from, vec!["Anna <anna@example.com>".to_owned()]);
        assert_eq!(h.to, vec!["Boris <boris@example.com>".to_owned()]);
        assert_eq!(h.date, Some(1_796_393_100));
    }

    #[test]
    fn plain_text_is_escaped() {
        let raw = "From: a@example.com\r\nSubject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n<script>alert(1)</script> & <b>not bold</b>\r\n";
        let message = parse(raw.as_bytes()).expect("parses");
        let r = body(&message, BASE, Options::default());
        assert!(
            r.html.starts_with("<pre class=\"mail-text\">"),
            "{}",
            r.html
        );
        assert!(!r.html.contains("<script"), "{}", r.html);
        assert!(
            r.html
                .contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;"),
            "{}",
            r.html
        );
    }

    #[test]
    fn the_frame_document_escapes_its_title() {
        let doc = frame_document("<p>x</p>", "</title><script>alert(1)</script>");
        assert!(!doc.contains("<script>"), "{doc}");
        assert!(doc.contains("<p>x</p>"));
        assert!(FRAME_CSP.contains("frame-ancestors 'self'"));
        assert!(!FRAME_CSP.contains("https:"));
        assert!(FRAME_CSP_WITH_IMAGES.contains("img-src 'self' data: https:"));
    }
}
