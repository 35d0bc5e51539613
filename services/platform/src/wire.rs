//! Conversions between the wire's well-known types and ours that every service's `api` layer
//! needs: times as `google.protobuf.Timestamp`, and ids (see [`mailroom_types::ids`]) parsed
//! with the field's name.

use chrono::{DateTime, Utc};

/// `at` as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a time, `None` when it is out of chrono's range.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_wire() {
        let at = Utc::now();
        assert_eq!(from_timestamp(&timestamp(at)), Some(at));
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(&far), None);
    }
}
