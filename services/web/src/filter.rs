//! The mailbox list's filter bar as AIP-160: one input per seed field (address, mailbox
//! name, owner, "not synced for N days", in CRM, disk MB, sender name, access by, CRM queue)
//! and the advanced raw filter, composed into the `filter` of `ListMailboxes`. Every value a
//! person typed in a field is a quoted string literal or a checked number, so no field can add
//! a clause. The advanced text is raw AIP-160 by design (the registry checks it); it goes in
//! parentheses and is refused here unless its parentheses balance outside quoted strings, so
//! it cannot close its own group and turn the `AND` of the other fields into an `OR`.

/// The filter bar's fields as typed (people already resolved to ids by the page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub address: String,
    pub mailbox: String,
    pub owner: String,
    /// Whole days since the last sync, at least.
    pub days: String,
    /// `yes`, `no`, or anything else for either.
    pub crm: String,
    pub disk_min: String,
    pub disk_max: String,
    pub sender: String,
    /// A user id (the page resolves an address to it).
    pub access_by: String,
    /// A user id (the page resolves an address to it).
    pub crm_queue: String,
    /// Raw AIP-160 text, checked by the registry.
    pub advanced: String,
}

/// Which field could not be read, for the message under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadField {
    Days,
    DiskMin,
    DiskMax,
    /// The advanced filter's parentheses do not balance.
    Advanced,
}

/// Whether the parentheses of `text` balance outside double-quoted strings (where `\`
/// escapes the next character), never closing more than were opened.
pub fn parentheses_balance(text: &str) -> bool {
    let mut depth: usize = 0;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, _) => {}
            (false, '"') => quoted = true,
            (false, '(') => depth += 1,
            (false, ')') => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            (false, _) => {}
        }
    }
    depth == 0 && !quoted
}

/// `value` as an AIP-160 string literal: in double quotes, `\` and `"` escaped, control
/// characters (which the registry refuses) made spaces.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn whole_days(text: &str) -> Result<Option<u32>, ()> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u32>().map(Some).map_err(|_| ())
}

fn megabytes(text: &str) -> Result<Option<String>, ()> {
    let text = text.trim().replace(',', ".");
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(format!("{v}"))),
        _ => Err(()),
    }
}

impl Fields {
    /// Whether nothing narrows the list.
    pub fn is_empty(&self) -> bool {
        self.compose().map(|f| f.is_empty()).unwrap_or(false)
    }

    /// The AIP-160 filter: the fields' comparisons joined by AND, the advanced text in
    /// parentheses first. A number that is not one is reported, not sent.
    pub fn compose(&self) -> Result<String, BadField> {
        let mut parts: Vec<String> = Vec::new();
        let advanced = self.advanced.trim();
        if !advanced.is_empty() {
            if !parentheses_balance(advanced) {
                return Err(BadField::Advanced);
            }
            parts.push(format!("({advanced})"));
        }
        let mut text = |field: &str, op: &str, value: &str| {
            let value = value.trim();
            if !value.is_empty() {
                parts.push(format!("{field} {op} {}", quote(value)));
            }
        };
        text("email", ":", &self.address);
        text("name", ":", &self.mailbox);
        text("owner", ":", &self.owner);
        text("sender_name", ":", &self.sender);
        text("access_by", "=", &self.access_by);
        text("crm_queue", "=", &self.crm_queue);
        if let Some(days) = whole_days(&self.days).map_err(|_| BadField::Days)? {
            parts.push(format!("days_since_sync >= {days}"));
        }
        match self.crm.as_str() {
            "yes" => parts.push("in_crm = true".into()),
            "no" => parts.push("in_crm = false".into()),
            _ => {}
        }
        if let Some(min) = megabytes(&self.disk_min).map_err(|_| BadField::DiskMin)? {
            parts.push(format!("disk_mb >= {min}"));
        }
        if let Some(max) = megabytes(&self.disk_max).map_err(|_| BadField::DiskMax)? {
            parts.push(format!("disk_mb <= {max}"));
        }
        Ok(parts.join(" AND "))
    }
}

/// The columns a header can sort by, with the registry's `order_by` key.
pub fn sort_key(column: &str) -> Option<&'static str> {
    Some(match column {
        "employee" => "owner",
        "email" => "email",
        "name" => "name",
        "sender_name" => "sender_name",
        "last_sync_time" => "last_sync_time",
        "sync_state" => "sync_state",
        "unread_count" => "unread_count",
        "message_count" => "message_count",
        "disk_mb" => "disk_mb",
        _ => return None,
    })
}

/// A `sort` parameter the registry accepts (`email`, `disk_mb desc`), else nothing.
pub fn order_by(sort: &str) -> Option<(String, bool)> {
    let mut words = sort.split_whitespace();
    let key = words.next()?;
    let desc = match words.next() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    let known = [
        "owner",
        "email",
        "name",
        "sender_name",
        "last_sync_time",
        "sync_state",
        "unread_count",
        "message_count",
        "disk_mb",
        "create_time",
    ];
    known.contains(&key).then(|| (key.to_owned(), desc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbalanced_parentheses_in_advanced_are_refused() {
        for bad in [
            "name = \"a\") OR (true",
            "(name = \"a\"",
            ")(",
            "name = \"a",
        ] {
            let f = Fields {
                advanced: bad.into(),
                address: "x".into(),
                ..Fields::default()
            };
            assert_eq!(f.compose(), Err(BadField::Advanced), "{bad}");
        }
        for good in [
            "(name = \"a\" OR name = \"b\")",
            "name = \"smile :)\"",
            "name = \"q\\\")\"",
        ] {
            let f = Fields {
                advanced: good.into(),
                ..Fields::default()
            };
            assert_eq!(f.compose(), Ok(format!("({good})")), "{good}");
        }
    }

    #[test]
    fn each_field_becomes_its_comparison() {
        let f = Fields {
            address: "ann@".into(),
            mailbox: "Backup".into(),
            owner: "Lee".into(),
            days: "7".into(),
            crm: "yes".into(),
            disk_min: "10".into(),
            disk_max: "250.5".into(),
            sender: "Ann".into(),
            access_by: "u1".into(),
            crm_queue: "u2".into(),
            advanced: String::new(),
        };
        assert_eq!(
            f.compose().unwrap(),
            r#"email : "ann@" AND name : "Backup" AND owner : "Lee" AND sender_name : "Ann" AND access_by = "u1" AND crm_queue = "u2" AND days_since_sync >= 7 AND in_crm = true AND disk_mb >= 10 AND disk_mb <= 250.5"#
        );
        let no = Fields {
            crm: "no".into(),
            ..Default::default()
        };
        assert_eq!(no.compose().unwrap(), "in_crm = false");
        assert!(Fields::default().is_empty());
        assert_eq!(Fields::default().compose().unwrap(), "");
    }

    #[test]
    fn typed_text_cannot_add_a_clause() {
        let f = Fields {
            address: r#"a" OR email:""#.into(),
            ..Default::default()
        };
        let composed = f.compose().unwrap();
        assert_eq!(composed, r#"email : "a\" OR email:\"""#);
        // One string literal: the quote inside is escaped, so the literal ends at the end.
        let body = &composed["email : ".len()..];
        assert!(body.starts_with('"') && body.ends_with('"'));
        let inner = &body[1..body.len() - 1];
        let mut escaped = false;
        for c in inner.chars() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else {
                assert_ne!(c, '"', "an unescaped quote ends the literal early");
            }
        }
        assert_eq!(quote(r"back\slash"), r#""back\\slash""#);
        assert_eq!(quote("a\u{0}b\u{1b}c"), r#""a b c""#);
        assert_eq!(quote(r#"\""#), r#""\\\"""#);
    }

    #[test]
    fn numbers_are_checked_not_passed_through() {
        let bad = |f: Fields| f.compose().unwrap_err();
        assert_eq!(
            bad(Fields {
                days: "7 OR true".into(),
                ..Default::default()
            }),
            BadField::Days
        );
        assert_eq!(
            bad(Fields {
                disk_min: "-1".into(),
                ..Default::default()
            }),
            BadField::DiskMin
        );
        assert_eq!(
            bad(Fields {
                disk_max: "1e999".into(),
                ..Default::default()
            }),
            BadField::DiskMax
        );
        let comma = Fields {
            disk_min: "1,5".into(),
            ..Default::default()
        };
        assert_eq!(comma.compose().unwrap(), "disk_mb >= 1.5");
    }

    #[test]
    fn advanced_text_is_grouped_before_the_fields() {
        let f = Fields {
            advanced: "sync_state = ERROR OR unread_count > 5".into(),
            owner: "lee".into(),
            ..Default::default()
        };
        assert_eq!(
            f.compose().unwrap(),
            r#"(sync_state = ERROR OR unread_count > 5) AND owner : "lee""#
        );
    }

    #[test]
    fn sorts_are_known_keys_with_a_direction() {
        assert_eq!(order_by("email"), Some(("email".into(), false)));
        assert_eq!(order_by("disk_mb desc"), Some(("disk_mb".into(), true)));
        assert_eq!(order_by("email; drop"), None);
        assert_eq!(order_by("email desc extra"), None);
        assert_eq!(order_by("colour"), None);
        assert_eq!(sort_key("employee"), Some("owner"));
        assert_eq!(sort_key("access_by"), None);
    }
}
