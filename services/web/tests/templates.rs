//! The templates keep the page CSP's promises: no inline script or style anywhere, every POST
//! form carries its CSRF token, and every input has a label — checked on the sources, so a
//! page added later is checked too.

use std::path::{Path, PathBuf};

fn templates() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).expect("templates directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "html") {
                let text = std::fs::read_to_string(&path).expect("template text");
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        &mut out,
    );
    assert!(out.len() > 5, "templates found: {}", out.len());
    out
}

#[test]
fn no_inline_script_style_or_handlers() {
    let mut bad = Vec::new();
    for (path, text) in templates() {
        let lower = text.to_ascii_lowercase();
        for (i, _) in lower.match_indices("<script") {
            let tag_end = lower[i..].find('>').map(|e| i + e).unwrap_or(lower.len());
            let tag = &lower[i..tag_end];
            let body_start = tag_end + 1;
            let closes_at_once = lower[body_start.min(lower.len())..].starts_with("</script>");
            if !tag.contains(" src=") || !closes_at_once {
                bad.push(format!("{}: inline <script>", path.display()));
            }
        }
        if lower.contains("<style") {
            bad.push(format!("{}: <style> element", path.display()));
        }
        if lower.contains(" style=") {
            bad.push(format!("{}: style attribute", path.display()));
        }
        for handler in [
            " onclick=",
            " onload=",
            " onsubmit=",
            " onchange=",
            " onerror=",
            "javascript:",
        ] {
            if lower.contains(handler) {
                bad.push(format!("{}: {}", path.display(), handler.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the CSP would block these:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_post_form_carries_the_csrf_token() {
    let mut bad = Vec::new();
    for (path, text) in templates() {
        let lower = text.to_ascii_lowercase();
        for (i, _) in lower.match_indices("<form") {
            let tag_end = lower[i..].find('>').map(|e| i + e).unwrap_or(lower.len());
            let tag = &lower[i..tag_end];
            if !tag.contains("method=\"post\"") {
                continue;
            }
            let body_end = lower[i..]
                .find("</form>")
                .map(|e| i + e)
                .unwrap_or(lower.len());
            if !lower[i..body_end].contains("name=\"_csrf\"") {
                let line = text[..i].lines().count() + 1;
                bad.push(format!("{}:{line}", path.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "POST forms without _csrf:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_visible_input_has_a_label() {
    let mut bad = Vec::new();
    for (path, text) in templates() {
        let lower = text.to_ascii_lowercase();
        for tag_name in ["<input", "<select", "<textarea"] {
            for (i, _) in lower.match_indices(tag_name) {
                let tag_end = lower[i..].find('>').map(|e| i + e).unwrap_or(lower.len());
                let tag = &lower[i..tag_end];
                if tag.contains("type=\"hidden\"")
                    || tag.contains("type=\"submit\"")
                    || tag.contains("aria-label=")
                    || tag.contains("aria-labelledby=")
                {
                    continue;
                }
                let Some(id_at) = tag.find(" id=\"") else {
                    // Wrapped in its label (<label>text <input></label>) is fine too.
                    let before = &lower[..i];
                    let open = before.rfind("<label");
                    let close = before.rfind("</label>");
                    if open.is_some() && (close.is_none() || close < open) {
                        continue;
                    }
                    let line = text[..i].lines().count();
                    bad.push(format!(
                        "{}:{line}: {tag_name} without id or label",
                        path.display()
                    ));
                    continue;
                };
                let rest = &tag[id_at + 5..];
                let id = &rest[..rest.find('"').unwrap_or(rest.len())];
                if !lower.contains(&format!("for=\"{id}\"")) {
                    let line = text[..i].lines().count();
                    bad.push(format!(
                        "{}:{line}: no <label for=\"{id}\">",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "inputs a screen reader cannot name:\n{}",
        bad.join("\n")
    );
}
