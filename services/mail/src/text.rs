//! A server's words in our messages: whatever a server says is flattened onto one line and
//! bounded before it reaches an error, a log line or an event, so it can neither break a
//! line-based format nor flood one.

/// Most characters of a server's text kept (an ellipsis marks the cut): enough to read its
/// reason, too few to relay a banner or a page of whatever else answered.
const MAX_CHARS: usize = 120;

/// `text` without control characters, trimmed, and at most [`MAX_CHARS`] characters long.
pub fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_flattened_and_bounded() {
        assert_eq!(
            one_line("NO\r\n[AUTHENTICATIONFAILED]"),
            "NO  [AUTHENTICATIONFAILED]"
        );
        assert_eq!(one_line("  short  "), "short");
        let long = one_line(&"é".repeat(500));
        assert_eq!(long.chars().count(), MAX_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
