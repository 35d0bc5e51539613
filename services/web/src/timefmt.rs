//! Timestamps as a person reads them: in their time zone, with month names in their language.

use chrono::{DateTime, TimeZone, Utc};

use crate::i18n::Locale;

const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const MONTHS_RU: [&str; 12] = [
    "янв.",
    "февр.",
    "мар.",
    "апр.",
    "мая",
    "июн.",
    "июл.",
    "авг.",
    "сент.",
    "окт.",
    "нояб.",
    "дек.",
];

fn utc(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    if ts.seconds == 0 && ts.nanos == 0 {
        return None;
    }
    Utc.timestamp_opt(ts.seconds, ts.nanos.clamp(0, 999_999_999) as u32)
        .single()
}

/// `4 Dec 2026, 14:05` / `4 дек. 2026, 14:05`; a dash when there is no time.
pub fn format(ts: Option<&prost_types::Timestamp>, tz: chrono_tz::Tz, locale: Locale) -> String {
    use chrono::Datelike;
    let Some(time) = utc(ts) else {
        return "—".into();
    };
    let local = time.with_timezone(&tz);
    let month = (local.month0() as usize).min(11);
    let name = match locale {
        Locale::En => MONTHS_EN[month],
        Locale::Ru => MONTHS_RU[month],
    };
    format!(
        "{} {} {}, {}",
        local.day(),
        name,
        local.year(),
        local.format("%H:%M")
    )
}

/// RFC 3339 in UTC; empty when there is no time.
pub fn iso(ts: Option<&prost_types::Timestamp>) -> String {
    utc(ts)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_the_zone_and_language() {
        let ts = prost_types::Timestamp {
            seconds: 1_796_400_000,
            nanos: 0,
        };
        let moscow: chrono_tz::Tz = "Europe/Moscow".parse().unwrap();
        let en = format(Some(&ts), chrono_tz::UTC, Locale::En);
        let ru = format(Some(&ts), moscow, Locale::Ru);
        assert!(en.ends_with(":00") || en.contains(':'), "{en}");
        assert_ne!(en, ru);
        assert_eq!(format(None, moscow, Locale::Ru), "—");
        assert_eq!(iso(Some(&ts)).len(), 20);
    }
}
