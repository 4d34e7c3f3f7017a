//! Business-hours arithmetic for SLA timers: pure functions over instants, no store.
//!
//! A calendar is a time zone, the weekdays a shift starts on and the shift's local start
//! and end. A shift whose end is not after its start runs overnight into the next day
//! (`22:00-06:00` on Friday ends Saturday 06:00). Local times are resolved in the zone,
//! so a shift keeps its wall-clock hours across a DST change (and is an hour shorter or
//! longer that day); a start or end that falls in a DST gap moves to the first instant
//! after the gap, one that falls twice in a DST overlap takes the earlier instant.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How business hours are configured (`[service.sla.business_hours]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursConfig {
    /// An IANA zone such as `Europe/London`.
    pub time_zone: String,
    /// Weekdays a shift starts on: `mon` … `sun`.
    pub days: Vec<String>,
    /// Local `HH:MM` the shift starts.
    pub start: String,
    /// Local `HH:MM` the shift ends; not after `start` means the next day.
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service.sla.business_hours: {0}")]
pub struct CalendarError(pub String);

/// When the clock of an SLA runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Calendar {
    /// Every instant counts.
    Always,
    Hours {
        tz: Tz,
        /// Monday first.
        days: [bool; 7],
        start: NaiveTime,
        end: NaiveTime,
    },
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Longest a computation looks ahead for open time before giving up (ten years): a
/// calendar always has at least one shift a week, so this is never reached in practice.
const HORIZON_DAYS: i64 = 3660;

impl Calendar {
    pub fn from_config(config: Option<&BusinessHoursConfig>) -> Result<Self, CalendarError> {
        let Some(config) = config else {
            return Ok(Calendar::Always);
        };
        let tz: Tz = config
            .time_zone
            .parse()
            .map_err(|_| CalendarError(format!("unknown time zone `{}`", config.time_zone)))?;
        let mut days = [false; 7];
        for day in &config.days {
            let n = DAY_NAMES
                .iter()
                .position(|name| name.eq_ignore_ascii_case(day.trim()))
                .ok_or_else(|| CalendarError(format!("unknown weekday `{day}` (mon … sun)")))?;
            days[n] = true;
        }
        if !days.contains(&true) {
            return Err(CalendarError("name at least one weekday in `days`".into()));
        }
        let time = |text: &str, key: &str| {
            NaiveTime::parse_from_str(text.trim(), "%H:%M")
                .map_err(|_| CalendarError(format!("`{key}` must be HH:MM, not `{text}`")))
        };
        let start = time(&config.start, "start")?;
        let end = time(&config.end, "end")?;
        Ok(Calendar::Hours {
            tz,
            days,
            start,
            end,
        })
    }

    /// The instant `business` of open time after `from`.
    pub fn add(&self, from: DateTime<Utc>, business: Duration) -> DateTime<Utc> {
        if business <= Duration::zero() {
            return from;
        }
        let Calendar::Hours { .. } = self else {
            return from + business;
        };
        let mut remaining = business;
        let mut last_end = from;
        for (open, close) in self.windows_from(from) {
            let begin = open.max(from);
            if close <= begin {
                continue;
            }
            let available = close - begin;
            if remaining <= available {
                return begin + remaining;
            }
            remaining -= available;
            last_end = close;
        }
        // Beyond the horizon: count the rest as elapsed time rather than never.
        last_end + remaining
    }

    /// Open time between `from` and `to` (zero when `to` is not after `from`).
    pub fn between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::zero();
        }
        let Calendar::Hours { .. } = self else {
            return to - from;
        };
        let mut total = Duration::zero();
        for (open, close) in self.windows_from(from) {
            if open >= to {
                break;
            }
            let begin = open.max(from);
            let finish = close.min(to);
            if finish > begin {
                total += finish - begin;
            }
        }
        total
    }

    /// Whether the clock runs at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        match self {
            Calendar::Always => true,
            Calendar::Hours { .. } => self
                .windows_from(at)
                .take_while(|(open, _)| *open <= at)
                .any(|(open, close)| open <= at && at < close),
        }
    }

    /// Open windows in UTC, in order, starting with the shift that may contain `from`
    /// (an overnight shift that began the day before).
    fn windows_from(
        &self,
        from: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let (tz, days, start, end) = match self {
            Calendar::Hours {
                tz,
                days,
                start,
                end,
            } => (Some(*tz), *days, *start, *end),
            Calendar::Always => (None, [false; 7], NaiveTime::MIN, NaiveTime::MIN),
        };
        let first_day = tz
            .map(|tz| from.with_timezone(&tz).date_naive())
            .unwrap_or_else(|| from.date_naive())
            - Duration::days(1);
        let overnight = end <= start;
        (0..HORIZON_DAYS).filter_map(move |offset| {
            let tz = tz?;
            let day = first_day + Duration::days(offset);
            if !days[day.weekday().num_days_from_monday() as usize] {
                return None;
            }
            let end_day: NaiveDate = if overnight {
                day + Duration::days(1)
            } else {
                day
            };
            let open = resolve(tz, day.and_time(start));
            let close = resolve(tz, end_day.and_time(end));
            (close > open).then_some((open, close))
        })
    }
}

/// A local wall-clock time as an instant: the earlier of two in an overlap, the end of
/// the gap for a time that does not exist.
fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // DST gaps are whole minutes (an hour, mostly): the first minute that exists after
    // `local` is the instant the gap ends.
    let mut probe = local;
    for _ in 0..(24 * 60) {
        if let Some(at) = tz.from_local_datetime(&probe).earliest() {
            return at.with_timezone(&Utc);
        }
        probe += Duration::minutes(1);
    }
    Utc.from_utc_datetime(&local)
}

/// First response and resolution targets for one priority, in business minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaTarget {
    pub first_response_minutes: i64,
    pub resolution_minutes: i64,
}

/// The due instants of a ticket's two timers: its creation plus its target plus the
/// business time it spent paused (pending the customer, resolved, closed).
pub fn due_times(
    calendar: &Calendar,
    created: DateTime<Utc>,
    target: SlaTarget,
    paused: Duration,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let after = |minutes: i64| {
        let base = calendar.add(created, Duration::minutes(minutes.max(0)));
        // Paused business time extends the timer by as much business time again.
        calendar.add(base, paused)
    };
    (
        after(target.first_response_minutes),
        after(target.resolution_minutes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid instant")
            .with_timezone(&Utc)
    }

    fn calendar(tz: &str, days: &[&str], start: &str, end: &str) -> Calendar {
        Calendar::from_config(Some(&BusinessHoursConfig {
            time_zone: tz.into(),
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            start: start.into(),
            end: end.into(),
        }))
        .expect("valid calendar")
    }

    fn office() -> Calendar {
        calendar(
            "UTC",
            &["mon", "tue", "wed", "thu", "fri"],
            "09:00",
            "17:00",
        )
    }

    #[test]
    fn around_the_clock_adds_plain_time() {
        let start = at("2026-11-27T16:00:00Z");
        assert_eq!(
            Calendar::Always.add(start, Duration::hours(3)),
            at("2026-11-27T19:00:00Z")
        );
        assert_eq!(
            Calendar::Always.between(start, at("2026-11-28T16:00:00Z")),
            Duration::hours(24)
        );
    }

    #[test]
    fn time_within_one_day_stays_in_that_day() {
        // Tuesday 10:00 + 2 h
        assert_eq!(
            office().add(at("2026-11-24T10:00:00Z"), Duration::hours(2)),
            at("2026-11-24T12:00:00Z")
        );
    }

    #[test]
    fn time_past_closing_carries_to_the_next_morning() {
        // Tuesday 16:00 + 2 h = Wednesday 10:00
        assert_eq!(
            office().add(at("2026-11-24T16:00:00Z"), Duration::hours(2)),
            at("2026-11-25T10:00:00Z")
        );
    }

    #[test]
    fn friday_afternoon_carries_over_the_weekend_to_monday() {
        // Friday 2026-11-27 16:00 + 4 h = Monday 2026-11-30 12:00
        assert_eq!(
            office().add(at("2026-11-27T16:00:00Z"), Duration::hours(4)),
            at("2026-11-30T12:00:00Z")
        );
    }

    #[test]
    fn a_start_outside_hours_waits_for_the_next_opening() {
        // Saturday 12:00 + 1 h = Monday 10:00; Tuesday 06:00 + 1 h = Tuesday 10:00
        assert_eq!(
            office().add(at("2026-11-28T12:00:00Z"), Duration::hours(1)),
            at("2026-11-30T10:00:00Z")
        );
        assert_eq!(
            office().add(at("2026-11-24T06:00:00Z"), Duration::hours(1)),
            at("2026-11-24T10:00:00Z")
        );
    }

    #[test]
    fn an_exact_fit_ends_at_closing_not_the_next_morning() {
        assert_eq!(
            office().add(at("2026-11-24T09:00:00Z"), Duration::hours(8)),
            at("2026-11-24T17:00:00Z")
        );
    }

    #[test]
    fn between_counts_only_open_time() {
        let cal = office();
        // Friday 16:00 → Monday 10:00: one hour Friday, one Monday.
        assert_eq!(
            cal.between(at("2026-11-27T16:00:00Z"), at("2026-11-30T10:00:00Z")),
            Duration::hours(2)
        );
        // A whole week is five shifts.
        assert_eq!(
            cal.between(at("2026-11-23T00:00:00Z"), at("2026-11-30T00:00:00Z")),
            Duration::hours(40)
        );
        assert_eq!(
            cal.between(at("2026-11-28T00:00:00Z"), at("2026-11-29T23:00:00Z")),
            Duration::zero()
        );
        assert_eq!(
            cal.between(at("2026-11-30T10:00:00Z"), at("2026-11-27T10:00:00Z")),
            Duration::zero()
        );
    }

    #[test]
    fn add_and_between_agree() {
        let cal = calendar("Europe/London", &["mon", "wed", "fri"], "08:30", "12:15");
        let from = at("2026-03-20T11:00:00Z");
        for minutes in [1, 59, 60, 225, 226, 1000, 5000] {
            let due = cal.add(from, Duration::minutes(minutes));
            assert_eq!(
                cal.between(from, due),
                Duration::minutes(minutes),
                "{minutes}"
            );
        }
    }

    #[test]
    fn an_overnight_shift_runs_past_midnight() {
        let night = calendar(
            "UTC",
            &["mon", "tue", "wed", "thu", "fri"],
            "22:00",
            "06:00",
        );
        // Friday 05:00 is inside Thursday's shift: one hour left, then Friday 22:00.
        assert_eq!(
            night.add(at("2026-11-27T05:00:00Z"), Duration::hours(2)),
            at("2026-11-27T23:00:00Z")
        );
        // Saturday 05:00 is inside Friday's shift; Saturday and Sunday start none.
        assert_eq!(
            night.add(at("2026-11-28T05:00:00Z"), Duration::hours(2)),
            at("2026-11-30T23:00:00Z")
        );
        assert!(night.is_open(at("2026-11-28T05:59:00Z")));
        assert!(!night.is_open(at("2026-11-28T06:00:00Z")));
        assert!(!night.is_open(at("2026-11-28T23:00:00Z")));
    }

    #[test]
    fn hours_follow_local_time_across_daylight_saving() {
        let london = calendar(
            "Europe/London",
            &["mon", "tue", "wed", "thu", "fri"],
            "09:00",
            "17:00",
        );
        // Before the change (GMT) 09:00 local is 09:00Z; after it (BST, 2026-03-29) 08:00Z.
        assert_eq!(
            london.add(at("2026-03-27T16:00:00Z"), Duration::hours(2)),
            at("2026-03-30T09:00:00Z")
        );
        assert!(london.is_open(at("2026-03-30T08:00:00Z")));
        assert!(!london.is_open(at("2026-03-27T08:00:00Z")));
        // New York falls back on 2026-11-01: 09:00 EST is 14:00Z.
        let new_york = calendar("America/New_York", &["mon"], "09:00", "10:00");
        assert_eq!(
            new_york.add(at("2026-10-26T12:00:00Z"), Duration::minutes(30)),
            at("2026-10-26T13:30:00Z")
        );
        assert_eq!(
            new_york.add(at("2026-10-27T00:00:00Z"), Duration::minutes(30)),
            at("2026-11-02T14:30:00Z")
        );
    }

    #[test]
    fn a_shift_through_the_spring_gap_is_an_hour_shorter() {
        // 00:00–06:00 every day in London; on 2026-03-29 01:00–02:00 does not exist.
        let cal = calendar(
            "Europe/London",
            &["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "00:00",
            "06:00",
        );
        assert_eq!(
            cal.between(at("2026-03-28T12:00:00Z"), at("2026-03-29T12:00:00Z")),
            Duration::hours(5)
        );
        assert_eq!(
            cal.between(at("2026-10-24T12:00:00Z"), at("2026-10-25T12:00:00Z")),
            Duration::hours(7),
            "the autumn overlap repeats an hour"
        );
    }

    #[test]
    fn a_start_in_the_gap_opens_when_the_gap_ends() {
        // 01:30 local does not exist in London on 2026-03-29; the shift opens at 02:00 BST.
        let cal = calendar("Europe/London", &["sun"], "01:30", "03:00");
        assert_eq!(
            cal.add(at("2026-03-28T12:00:00Z"), Duration::minutes(10)),
            at("2026-03-29T01:10:00Z")
        );
    }

    #[test]
    fn bad_calendars_are_refused_with_the_reason() {
        let bad = |tz: &str, days: &[&str], start: &str| {
            Calendar::from_config(Some(&BusinessHoursConfig {
                time_zone: tz.into(),
                days: days.iter().map(|d| (*d).to_owned()).collect(),
                start: start.into(),
                end: "17:00".into(),
            }))
            .unwrap_err()
            .0
        };
        assert!(bad("Mars/Olympus", &["mon"], "09:00").contains("time zone"));
        assert!(bad("UTC", &[], "09:00").contains("weekday"));
        assert!(bad("UTC", &["funday"], "09:00").contains("funday"));
        assert!(bad("UTC", &["mon"], "9am").contains("HH:MM"));
    }

    #[test]
    fn paused_time_moves_both_due_times_by_business_time() {
        let cal = office();
        let target = SlaTarget {
            first_response_minutes: 60,
            resolution_minutes: 8 * 60,
        };
        let created = at("2026-11-24T09:00:00Z");
        let (first, resolution) = due_times(&cal, created, target, Duration::zero());
        assert_eq!(first, at("2026-11-24T10:00:00Z"));
        assert_eq!(resolution, at("2026-11-24T17:00:00Z"));
        let (first, resolution) = due_times(&cal, created, target, Duration::hours(2));
        assert_eq!(first, at("2026-11-24T12:00:00Z"));
        assert_eq!(resolution, at("2026-11-25T11:00:00Z"));
    }
}
