//! Typed ids. Each is a UUID underneath (v7 when Mailroom makes it, so ids sort by creation),
//! stored in PostgreSQL as `uuid` and sent on the wire as its hyphenated text.
//!
//! An id enters a service once, at its API, through [`parse`](UserId::parse) (required) or
//! [`parse_optional`](UserId::parse_optional) (empty means none), which name the field in
//! their error so the caller knows which input to fix. From there on it is the type that
//! says what it is, not the parameter's position.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An id from the wire that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{field}` is required")]
    Missing { field: String },
    #[error("`{field}` is not a valid id (expected a UUID such as 0190c3a4-5e6f-7a8b-9c0d-1e2f3a4b5c6d)")]
    Malformed { field: String },
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
            serde::Serialize, serde::Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, ordered after every id made before it (UUID v7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// An id already known to be of this kind (read from our own store or event).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            pub const fn into_uuid(self) -> Uuid {
                self.0
            }

            /// The id in `value`, a required field called `field` on the wire.
            pub fn parse(field: &str, value: &str) -> Result<Self, IdError> {
                if value.is_empty() {
                    return Err(IdError::Missing { field: field.to_owned() });
                }
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| IdError::Malformed { field: field.to_owned() })
            }

            /// The id in `value`, an optional field called `field`: empty means none.
            pub fn parse_optional(field: &str, value: &str) -> Result<Option<Self>, IdError> {
                if value.is_empty() {
                    Ok(None)
                } else {
                    Self::parse(field, value).map(Some)
                }
            }

            /// Each of `values`, a repeated field called `field`.
            pub fn parse_all<S: AsRef<str>>(field: &str, values: &[S]) -> Result<Vec<Self>, IdError> {
                values.iter().map(|v| Self::parse(field, v.as_ref())).collect()
            }

            /// Many ids as bare UUIDs, for binding to a `uuid[]` parameter.
            pub fn uuids(ids: &[Self]) -> Vec<Uuid> {
                ids.iter().map(|id| id.0).collect()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

typed_id!(
    /// An organisation (a tenant).
    OrgId
);
typed_id!(
    /// A person in an organisation, in any state (invited, active, dismissed).
    UserId
);
typed_id!(
    /// A department of an organisation's structure.
    DepartmentId
);
typed_id!(
    /// A connected mailbox in the registry.
    MailboxId
);
typed_id!(
    /// An invitation.
    InvitationId
);
typed_id!(
    /// A quick-registration link.
    RegistrationLinkId
);
typed_id!(
    /// An access-control role of an organisation (a named set of scoped permissions).
    RoleId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_same_text() {
        let id = UserId::new();
        assert_eq!(UserId::parse("user_id", &id.to_string()), Ok(id));
    }

    #[test]
    fn names_the_field_it_refuses() {
        assert_eq!(
            MailboxId::parse("mailbox_id", "").unwrap_err().to_string(),
            "`mailbox_id` is required"
        );
        let err = MailboxId::parse("mailbox_id", "x'; DROP")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("`mailbox_id` is not a valid id"), "{err}");
        assert!(!err.contains("DROP"), "the input is not echoed: {err}");
        assert_eq!(OrgId::parse_optional("org_id", ""), Ok(None));
    }

    #[test]
    fn new_ids_sort_by_creation() {
        let (a, b) = (InvitationId::new(), InvitationId::new());
        assert!(a < b);
    }
}
