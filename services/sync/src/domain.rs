//! The sync's vocabulary as types that cannot hold a bad value: activity tiers and the
//! intervals they set, a request's priority, client kinds, the back-off after failures, and
//! the compact forms the message index stores (UIDs in a signed column, system flags as bits).

use std::time::Duration;

use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::proto::sync::v1 as pb;
use serde::Deserialize;

/// How recently a mailbox's owner was seen, which sets how often the mailbox syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Seen within `active_within` (an open tab, the desktop or the mobile app).
    Active,
    Recent,
    Idle,
    /// Not seen within `idle_within`, or never.
    Dormant,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Active, Tier::Recent, Tier::Idle, Tier::Dormant];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Active => "active",
            Tier::Recent => "recent",
            Tier::Idle => "idle",
            Tier::Dormant => "dormant",
        }
    }

    /// As stored in `schedule.tier`.
    pub fn code(self) -> i16 {
        match self {
            Tier::Active => 1,
            Tier::Recent => 2,
            Tier::Idle => 3,
            Tier::Dormant => 4,
        }
    }

    pub fn from_code(code: i16) -> Tier {
        match code {
            1 => Tier::Active,
            2 => Tier::Recent,
            3 => Tier::Idle,
            _ => Tier::Dormant,
        }
    }

    pub fn to_proto(self) -> pb::ActivityTier {
        match self {
            Tier::Active => pb::ActivityTier::Active,
            Tier::Recent => pb::ActivityTier::Recent,
            Tier::Idle => pb::ActivityTier::Idle,
            Tier::Dormant => pb::ActivityTier::Dormant,
        }
    }
}

/// Where the tiers begin and how often each syncs (section `sync.tiers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TierPolicy {
    /// Seen this recently: active.
    pub active_within_secs: u64,
    /// Seen this recently (but not active): recent.
    pub recent_within_secs: u64,
    /// Seen this recently (but not recent): idle; else dormant.
    pub idle_within_secs: u64,
    pub active_interval_secs: u64,
    pub recent_interval_secs: u64,
    pub idle_interval_secs: u64,
    pub dormant_interval_secs: u64,
}

impl Default for TierPolicy {
    fn default() -> Self {
        Self {
            active_within_secs: 120,
            recent_within_secs: 3_600,
            idle_within_secs: 7 * 86_400,
            active_interval_secs: 60,
            recent_interval_secs: 600,
            idle_interval_secs: 3_600,
            dormant_interval_secs: 86_400,
        }
    }
}

impl TierPolicy {
    /// The tier of an owner last seen `since` ago (`None`: never seen, or so long ago that
    /// the signal has expired).
    pub fn tier(&self, since: Option<Duration>) -> Tier {
        let Some(since) = since else {
            return Tier::Dormant;
        };
        let secs = since.as_secs();
        if secs <= self.active_within_secs {
            Tier::Active
        } else if secs <= self.recent_within_secs {
            Tier::Recent
        } else if secs <= self.idle_within_secs {
            Tier::Idle
        } else {
            Tier::Dormant
        }
    }

    /// How long after a sync the next one is due.
    pub fn interval(&self, tier: Tier) -> Duration {
        Duration::from_secs(
            match tier {
                Tier::Active => self.active_interval_secs,
                Tier::Recent => self.recent_interval_secs,
                Tier::Idle => self.idle_interval_secs,
                Tier::Dormant => self.dormant_interval_secs,
            }
            .max(1),
        )
    }

    /// How long a heartbeat is kept: past it the owner is dormant anyway.
    pub fn signal_ttl(&self) -> Duration {
        Duration::from_secs(self.idle_within_secs.max(self.recent_within_secs) + 60)
    }
}

/// How urgent a sync request is (`SyncRequested.priority`), which decides whether a late one
/// is still done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// The scheduler's work (and a request without a priority).
    Normal,
    /// Someone asked: "sync now", a mailbox just connected, a new password or server.
    High,
}

impl Priority {
    pub fn from_proto(value: i32) -> Priority {
        match ev::SyncPriority::try_from(value) {
            Ok(ev::SyncPriority::High) => Priority::High,
            _ => Priority::Normal,
        }
    }

    /// Whether a request `lag` old is passed over. A normal request older than the
    /// scheduler's `hold` has been issued again if the mailbox is still due, so after an
    /// outage that backlog is passed over without a query; a high one is always done.
    pub fn passed_over(self, lag: Duration, hold: Duration) -> bool {
        self == Priority::Normal && lag > hold
    }
}

/// Which client sent a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    WebTab,
    DesktopApp,
    MobileApp,
}

impl ClientKind {
    pub fn parse(value: i32) -> Result<Self, String> {
        match pb::ClientKind::try_from(value) {
            Ok(pb::ClientKind::WebTab) => Ok(ClientKind::WebTab),
            Ok(pb::ClientKind::DesktopApp) => Ok(ClientKind::DesktopApp),
            Ok(pb::ClientKind::MobileApp) => Ok(ClientKind::MobileApp),
            _ => Err("client must be WEB_TAB, DESKTOP_APP or MOBILE_APP".into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::WebTab => "web_tab",
            ClientKind::DesktopApp => "desktop_app",
            ClientKind::MobileApp => "mobile_app",
        }
    }
}

/// Exponential back-off after `failures` consecutive failed syncs, capped, with up to 25 %
/// jitter taken off (`jitter` in 0..1) so mailboxes that failed together do not retry
/// together.
pub fn backoff(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(cap);
    let jitter = jitter.clamp(0.0, 1.0);
    raw.mul_f64(1.0 - 0.25 * jitter)
}

/// An IMAP UID (1..2^32) as the index stores it: shifted into a signed 32-bit column,
/// keeping its order.
pub fn uid_to_db(uid: u32) -> i32 {
    (i64::from(uid) - (1i64 << 31)) as i32
}

pub fn uid_from_db(stored: i32) -> u32 {
    (i64::from(stored) + (1i64 << 31)) as u32
}

/// The system flags the index keeps as bits; other keywords are kept by name.
pub mod flags {
    pub const SEEN: i16 = 1;
    pub const ANSWERED: i16 = 2;
    pub const FLAGGED: i16 = 4;
    pub const DELETED: i16 = 8;
    pub const DRAFT: i16 = 16;

    /// The bit of a system flag (`\Seen`…), or `None` for a keyword.
    pub fn bit(flag: &str) -> Option<i16> {
        match flag.to_ascii_lowercase().as_str() {
            "\\seen" => Some(SEEN),
            "\\answered" => Some(ANSWERED),
            "\\flagged" => Some(FLAGGED),
            "\\deleted" => Some(DELETED),
            "\\draft" => Some(DRAFT),
            _ => None,
        }
    }

    /// The flags as IMAP names, system flags first.
    pub fn names(bits: i16, keywords: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (bit, name) in [
            (SEEN, "\\Seen"),
            (ANSWERED, "\\Answered"),
            (FLAGGED, "\\Flagged"),
            (DELETED, "\\Deleted"),
            (DRAFT, "\\Draft"),
        ] {
            if bits & bit != 0 {
                out.push(name.to_owned());
            }
        }
        out.extend(keywords.iter().cloned());
        out
    }
}

/// A folder's special use (RFC 6154), which decides whether its unread mail counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    None,
    Trash,
    Junk,
    Sent,
    Drafts,
}

impl SpecialUse {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialUse::None => "",
            SpecialUse::Trash => "trash",
            SpecialUse::Junk => "junk",
            SpecialUse::Sent => "sent",
            SpecialUse::Drafts => "drafts",
        }
    }

    /// Unread mail in Trash, Junk, Sent and Drafts is not what "unread" means to a person.
    pub fn counts_unread(self) -> bool {
        self == SpecialUse::None
    }

    /// As stored in `folders.special_use`.
    pub fn from_stored(value: &str) -> SpecialUse {
        match value {
            "trash" => SpecialUse::Trash,
            "junk" => SpecialUse::Junk,
            "sent" => SpecialUse::Sent,
            "drafts" => SpecialUse::Drafts,
            _ => SpecialUse::None,
        }
    }

    /// From the folder's name, for servers without SPECIAL-USE.
    pub fn guess(name: &str) -> SpecialUse {
        let leaf = name
            .rsplit(['/', '.'])
            .next()
            .unwrap_or(name)
            .to_ascii_lowercase();
        match leaf.as_str() {
            "trash" | "deleted" | "deleted items" | "deleted messages" | "bin" => SpecialUse::Trash,
            "junk" | "spam" | "junk e-mail" | "junk email" | "bulk mail" => SpecialUse::Junk,
            "sent" | "sent items" | "sent messages" | "sent mail" => SpecialUse::Sent,
            "drafts" | "draft" => SpecialUse::Drafts,
            _ => SpecialUse::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_latest_signal() {
        let p = TierPolicy::default();
        assert_eq!(p.tier(Some(Duration::from_secs(5))), Tier::Active);
        assert_eq!(p.tier(Some(Duration::from_secs(121))), Tier::Recent);
        assert_eq!(p.tier(Some(Duration::from_secs(3 * 3600))), Tier::Idle);
        assert_eq!(p.tier(Some(Duration::from_secs(8 * 86_400))), Tier::Dormant);
        assert_eq!(p.tier(None), Tier::Dormant);
        // The more active, the sooner.
        let intervals: Vec<_> = Tier::ALL.iter().map(|t| p.interval(*t)).collect();
        assert!(intervals.windows(2).all(|w| w[0] < w[1]), "{intervals:?}");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_downwards() {
        let base = Duration::from_secs(30);
        let cap = Duration::from_secs(3600);
        assert_eq!(backoff(1, base, cap, 0.0), base);
        assert_eq!(backoff(3, base, cap, 0.0), base * 4);
        assert_eq!(backoff(50, base, cap, 0.0), cap);
        let jittered = backoff(3, base, cap, 1.0);
        assert!(jittered < base * 4 && jittered >= (base * 4).mul_f64(0.75));
    }

    #[test]
    fn only_late_normal_requests_are_passed_over() {
        let hold = Duration::from_secs(300);
        let late = Duration::from_secs(301);
        let normal = Priority::from_proto(ev::SyncPriority::Normal as i32);
        let high = Priority::from_proto(ev::SyncPriority::High as i32);
        assert_eq!((normal, high), (Priority::Normal, Priority::High));
        assert_eq!(Priority::from_proto(0), Priority::Normal);
        assert!(normal.passed_over(late, hold));
        assert!(!normal.passed_over(hold, hold));
        assert!(!high.passed_over(Duration::from_secs(86_400), hold));
    }

    #[test]
    fn uids_keep_their_order_across_the_whole_range() {
        let samples = [1u32, 2, 1 << 31, (1 << 31) + 1, u32::MAX];
        for w in samples.windows(2) {
            assert!(uid_to_db(w[0]) < uid_to_db(w[1]));
        }
        for uid in samples {
            assert_eq!(uid_from_db(uid_to_db(uid)), uid);
        }
    }

    #[test]
    fn flags_round_trip() {
        let bits = flags::bit("\\Seen").unwrap() | flags::bit("\\FLAGGED").unwrap();
        assert_eq!(flags::bit("$Label1"), None);
        assert_eq!(
            flags::names(bits, &["$Label1".into()]),
            vec!["\\Seen", "\\Flagged", "$Label1"]
        );
    }

    #[test]
    fn special_use_is_guessed_from_common_names() {
        assert_eq!(SpecialUse::guess("INBOX.Sent Items"), SpecialUse::Sent);
        assert_eq!(SpecialUse::guess("Spam"), SpecialUse::Junk);
        assert_eq!(SpecialUse::guess("Projects/Trash"), SpecialUse::Trash);
        assert_eq!(SpecialUse::guess("INBOX"), SpecialUse::None);
    }
}
