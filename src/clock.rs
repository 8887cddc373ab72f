//! Time in one place: callers take `now` as a parameter, and these helpers format it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The gateway's clock: the system's, moved forward by whatever a test advanced it (the
/// shipped binary never does). Every expiry the server judges (tokens, codes, consents,
/// sessions, windows) is judged by it, so tests move time instead of sleeping.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    ahead_secs: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> OffsetDateTime {
        now() + time::Duration::seconds(self.ahead_secs.load(Ordering::Relaxed))
    }

    /// Unix seconds of [`Clock::now`].
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Moves this clock (and every component sharing it) forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.ahead_secs.fetch_add(secs, Ordering::Relaxed);
    }
}

/// `2026-11-23T14:15:03.123456Z`: fixed width, so the text sorts as the time does.
pub fn timestamp(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// ISO 8601 date-time as Open Banking uses it (`2026-11-23T14:15:03+00:00`).
pub fn ob_datetime(t: OffsetDateTime) -> String {
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
    );
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .to_offset(UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 date-time.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(timestamp(t), "2027-01-15T08:00:00.000000Z");
        assert_eq!(ob_datetime(t), "2027-01-15T08:00:00+00:00");
        assert_eq!(parse("2027-01-15T08:00:00+00:00"), Some(t));
        assert_eq!(parse("yesterday"), None);
    }
}
