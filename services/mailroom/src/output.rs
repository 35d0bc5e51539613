//! What `mailroom ctl` prints: one set of rows rendered as a table for people or as JSON for
//! scripts, so the two never disagree; and the few ways a value is written in a cell (times,
//! enum names), so every command writes them alike.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Named columns and their rows.
pub struct Rows {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Value>>,
    /// Printed under a table (e.g. the next page token); part of the JSON too.
    pub footer: Vec<(&'static str, Value)>,
    /// A single resource prints as an object in JSON, not an array.
    pub single: bool,
}

impl Rows {
    pub fn new(columns: Vec<&'static str>) -> Self {
        Self {
            columns,
            rows: Vec::new(),
            footer: Vec::new(),
            single: false,
        }
    }

    pub fn one(columns: Vec<&'static str>, row: Vec<Value>) -> Self {
        Self {
            columns,
            rows: vec![row],
            footer: Vec::new(),
            single: true,
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let objects: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|row| {
                        Value::Object(
                            self.columns
                                .iter()
                                .zip(row)
                                .map(|(c, v)| ((*c).to_owned(), v.clone()))
                                .collect::<Map<_, _>>(),
                        )
                    })
                    .collect();
                let body = if self.single {
                    // A single resource carries its footer as more of its fields.
                    match objects.into_iter().next() {
                        Some(Value::Object(mut map)) => {
                            for (k, v) in &self.footer {
                                map.insert((*k).to_owned(), v.clone());
                            }
                            Value::Object(map)
                        }
                        other => other.unwrap_or(Value::Null),
                    }
                } else if self.footer.is_empty() {
                    Value::Array(objects)
                } else {
                    let mut map = Map::new();
                    map.insert("items".into(), Value::Array(objects));
                    for (k, v) in &self.footer {
                        map.insert((*k).to_owned(), v.clone());
                    }
                    Value::Object(map)
                };
                serde_json::to_string_pretty(&body).unwrap_or_default()
            }
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
        let mut rows = Rows::new(vec!["id", "email"]);
        rows.rows.push(vec![json!("u1"), json!("ann@acme.test")]);
        rows.footer.push(("next_page_token", json!("abc")));
        let table = rows.render(Format::Table);
        assert!(
            table.contains("EMAIL")
                && table.contains("ann@acme.test")
                && table.contains("next_page_token: abc")
        );
        let parsed: Value = serde_json::from_str(&rows.render(Format::Json)).unwrap();
        assert_eq!(parsed["items"][0]["email"], "ann@acme.test");
        assert_eq!(parsed["next_page_token"], "abc");
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
