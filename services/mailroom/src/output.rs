//! What `mailroom ctl` prints: one set of rows rendered as a table for people, or as JSON or
//! YAML for scripts, so they never disagree; and the few ways a value is written in a cell
//! (times, enum names), so every command writes them alike.
//!
//! The JSON shape is stable (YAML is the same document): a list is
//! `{"kind": "<what the items are>", "items": [{…}, …], …}` with the page token and other list
//! facts (`next_page_token`, `total_size`, `revision`) beside `items`; a single resource is
//! its object. Field names are snake_case, as in the protobuf JSON mapping's original names.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// One JSON document (see the module's header for its shape).
    Json,
    /// The same document as YAML.
    Yaml,
}

impl Format {
    /// `value` written as this format's document (a table prints JSON: a value has no columns).
    pub fn document(self, value: &Value) -> String {
        match self {
            Format::Yaml => serde_yaml_ng::to_string(value)
                .map(|s| s.trim_end().to_owned())
                .unwrap_or_default(),
            Format::Json | Format::Table => serde_json::to_string_pretty(value).unwrap_or_default(),
        }
    }
}

/// Named columns and their rows.
pub struct Rows {
    /// What a list's items are (`users`, `relationships`): the `kind` of its document.
    pub kind: &'static str,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Value>>,
    /// Printed under a table (e.g. the next page token); part of the JSON too.
    pub footer: Vec<(&'static str, Value)>,
    /// A single resource prints as an object in JSON, not an array.
    pub single: bool,
}

impl Rows {
    /// A list of `kind` (plural, snake_case: `users`, `dead_letters`) with these columns.
    pub fn new(kind: &'static str, columns: Vec<&'static str>) -> Self {
        Self {
            kind,
            columns,
            rows: Vec::new(),
            footer: Vec::new(),
            single: false,
        }
    }

    pub fn one(columns: Vec<&'static str>, row: Vec<Value>) -> Self {
        Self {
            kind: "",
            columns,
            rows: vec![row],
            footer: Vec::new(),
            single: true,
        }
    }

    /// The document JSON and YAML print: `{"kind", "items", …footer}` for a list, the object
    /// (its footer as more fields) for a single resource.
    pub fn to_value(&self) -> Value {
        let mut objects = self.rows.iter().map(|row| {
            Value::Object(
                self.columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| ((*c).to_owned(), v.clone()))
                    .collect::<Map<_, _>>(),
            )
        });
        let mut map = if self.single {
            match objects.next() {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            }
        } else {
            let mut map = Map::new();
            map.insert("kind".into(), Value::from(self.kind));
            map.insert("items".into(), Value::Array(objects.collect()));
            map
        };
        for (k, v) in &self.footer {
            map.insert((*k).to_owned(), v.clone());
        }
        Value::Object(map)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json | Format::Yaml => format.document(&self.to_value()),
            Format::Table => {
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::NOTHING);
                table.set_header(self.columns.iter().map(|c| c.to_uppercase()));
                for row in &self.rows {
                    table.add_row(row.iter().map(cell));
                }
                let mut out = table.to_string();
                for (k, v) in &self.footer {
                    match v {
                        // A list prints one item a line under its name.
                        Value::Array(items) if !items.is_empty() => {
                            out.push_str(&format!("\n{k}:"));
                            for item in items {
                                out.push_str(&format!("\n  {}", cell(item)));
                            }
                        }
                        Value::Array(_) | Value::Null => {}
                        v if v.as_str() == Some("") => {}
                        v => out.push_str(&format!("\n{k}: {}", cell(v))),
                    }
                }
                out
            }
        }
    }
}

/// How [`time`] writes a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `2025-05-01 09:30 UTC`
    Minutes,
    /// `2025-05-01 09:30:15 UTC`
    Seconds,
    /// `2025-05-01T09:30:15+00:00`, in whole seconds.
    Rfc3339,
}

/// A protobuf timestamp as `clock` writes it; empty when unset or out of range.
pub fn time(t: Option<&prost_types::Timestamp>, clock: Clock) -> String {
    t.and_then(|t| {
        let nanos = match clock {
            Clock::Rfc3339 => 0,
            Clock::Minutes | Clock::Seconds => t.nanos.max(0) as u32,
        };
        chrono::DateTime::from_timestamp(t.seconds, nanos)
    })
    .map(|t| match clock {
        Clock::Minutes => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        Clock::Seconds => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Clock::Rfc3339 => t.to_rfc3339(),
    })
    .unwrap_or_default()
}

/// An enum value's name without its type's prefix (`USER_STATE_ACTIVE` → `ACTIVE`); empty
/// for a value this build does not know (`name` is `None`).
pub fn short_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n).to_owned())
        .unwrap_or_default()
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_and_json_show_the_same_rows() {
        let mut rows = Rows::new("users", vec!["id", "email"]);
        rows.rows.push(vec![json!("u1"), json!("ann@acme.test")]);
        rows.footer.push(("next_page_token", json!("abc")));
        let table = rows.render(Format::Table);
        assert!(
            table.contains("EMAIL")
                && table.contains("ann@acme.test")
                && table.contains("next_page_token: abc")
        );
        let parsed: Value = serde_json::from_str(&rows.render(Format::Json)).unwrap();
        assert_eq!(parsed["kind"], "users");
        assert_eq!(parsed["items"][0]["email"], "ann@acme.test");
        assert_eq!(parsed["next_page_token"], "abc");
        let yaml: Value = serde_yaml_ng::from_str(&rows.render(Format::Yaml)).unwrap();
        assert_eq!(yaml, parsed, "YAML is the same document");
    }

    #[test]
    fn a_list_without_extras_still_has_its_kind_and_a_single_resource_is_its_object() {
        let empty = Rows::new("relationships", vec!["relationship"]);
        let parsed: Value = serde_json::from_str(&empty.render(Format::Json)).unwrap();
        assert_eq!(parsed, json!({"kind": "relationships", "items": []}));
        let mut one = Rows::one(vec!["id", "name"], vec![json!("d1"), json!("Sales")]);
        one.footer.push(("revision", json!("r7")));
        let parsed: Value = serde_yaml_ng::from_str(&one.render(Format::Yaml)).unwrap();
        assert_eq!(
            parsed,
            json!({"id": "d1", "name": "Sales", "revision": "r7"})
        );
    }

    #[test]
    fn times_print_in_each_clock_and_unset_ones_print_nothing() {
        let t = prost_types::Timestamp {
            seconds: 1_746_091_815,
            nanos: 500_000_000,
        };
        assert_eq!(time(Some(&t), Clock::Minutes), "2025-05-01 09:30 UTC");
        assert_eq!(time(Some(&t), Clock::Seconds), "2025-05-01 09:30:15 UTC");
        assert_eq!(time(Some(&t), Clock::Rfc3339), "2025-05-01T09:30:15+00:00");
        assert_eq!(time(None, Clock::Seconds), "");
        assert_eq!(
            short_name(Some("USER_STATE_ACTIVE"), "USER_STATE_"),
            "ACTIVE"
        );
        assert_eq!(short_name(None, "USER_STATE_"), "");
    }
}
