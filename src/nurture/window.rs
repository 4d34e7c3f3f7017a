//! Sending windows: an email goes out during the recipient's local working hours.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// The zone of `name`, else of `fallback`, else UTC.
pub fn zone(name: Option<&str>, fallback: &str) -> Tz {
    name.and_then(|n| n.parse::<Tz>().ok())
        .or_else(|| fallback.parse::<Tz>().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// `now` when it falls inside `[start_hour, end_hour)` local time in `tz`, else the next
/// start of the window. `start == end` means any time.
pub fn next_send_time(now: DateTime<Utc>, tz: Tz, start_hour: u32, end_hour: u32) -> DateTime<Utc> {
    if start_hour == end_hour || start_hour > 23 || end_hour > 24 {
        return now;
    }
    let local = now.with_timezone(&tz);
    let hour = local.hour();
    let inside = if start_hour < end_hour {
        hour >= start_hour && hour < end_hour
    } else {
        // A window over midnight (22 → 6).
        hour >= start_hour || hour < end_hour
    };
    if inside {
        return now;
    }
    let start = NaiveTime::from_hms_opt(start_hour, 0, 0).unwrap_or(NaiveTime::MIN);
    let mut day = local.date_naive();
    if hour >= start_hour {
        day += Duration::days(1);
    }
    // A start hour skipped by a daylight-saving change moves to the next valid instant.
    for offset in 0..3 {
        let candidate = day.and_time(start) + Duration::hours(offset);
        if let Some(at) = tz.from_local_datetime(&candidate).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn sends_wait_for_the_recipients_morning() {
        let tokyo = zone(Some("Asia/Tokyo"), "UTC");
        // 12:00 UTC is 21:00 in Tokyo: wait for 08:00 there, 23:00 UTC.
        assert_eq!(
            next_send_time(utc("2026-03-02T12:00:00Z"), tokyo, 8, 19),
            utc("2026-03-02T23:00:00Z")
        );
        // 01:00 UTC is 10:00 in Tokyo: now.
        let now = utc("2026-03-02T01:00:00Z");
        assert_eq!(next_send_time(now, tokyo, 8, 19), now);
        // 05:00 in New York: later that day.
        let new_york = zone(Some("America/New_York"), "UTC");
        assert_eq!(
            next_send_time(utc("2026-01-10T10:00:00Z"), new_york, 8, 19),
            utc("2026-01-10T13:00:00Z")
        );
        assert_eq!(
            zone(Some("Not/AZone"), "Europe/London"),
            chrono_tz::Europe::London
        );
        assert_eq!(next_send_time(now, tokyo, 0, 0), now);
    }
}
