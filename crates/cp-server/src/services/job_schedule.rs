//! When a cron job is due: its schedule (croner, in the job's IANA time zone: a due time in a
//! daylight-saving gap fires right after the gap, one in a repeated hour fires once), its
//! constant jitter, and what a late scheduler does with the due times it finds past.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cp_types::FieldIssue;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use uuid::Uuid;

/// How late a due time may be found and still fire when the job has no catch-up window: a
/// busy scheduler or a restart of a few seconds does not make a job miss its time.
pub const GRACE_MS: i64 = 60_000;
/// Most past due times one claim walks through; a longer downtime counts the rest at once.
const MAX_WALK: usize = 10_000;

/// A job's parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a 5- or 6-field expression (seconds first) or an `@daily`-style alias, in `tz`;
    /// each problem names its field.
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, Vec<FieldIssue>> {
        let mut issues = Vec::new();
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = match parser.parse(expr.trim()) {
            Ok(c) => Some(c),
            Err(e) => {
                issues.push(FieldIssue::new(
                    "cron_schedule",
                    format!("not a cron expression of 5 or 6 fields or an @alias: {e}"),
                ));
                None
            }
        };
        let tz = match tz.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                issues.push(FieldIssue::new(
                    "cron_timezone",
                    format!("'{tz}' is not an IANA time zone (such as UTC or Europe/Berlin)"),
                ));
                None
            }
        };
        match (cron, tz) {
            (Some(cron), Some(tz)) => {
                let schedule = Schedule { cron, tz };
                if schedule.next_after(Utc::now()).is_none() {
                    return Err(vec![FieldIssue::new("cron_schedule", "never fires")]);
                }
                Ok(schedule)
            }
            _ => Err(issues),
        }
    }

    /// The first due time after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// The job's jitter: the same delay for every due time, so a job keeps its rhythm while jobs
/// on the same schedule spread over `jitter_seconds`.
pub fn jitter_ms(job: Uuid, jitter_seconds: i64) -> i64 {
    if jitter_seconds <= 0 {
        return 0;
    }
    let spread = (jitter_seconds * 1000) as u128;
    (job.as_u128() % (spread + 1)) as i64
}

/// What a claim at `now` does with the due times from `due` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The due time that fires (Unix ms), if one is recent enough.
    pub fire: Option<i64>,
    /// Due times that do not fire: how many, the first and the last.
    pub missed: Option<Missed>,
    /// The next due time after `now`.
    pub next_due: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub count: i64,
    /// The walk stopped at [`MAX_WALK`]: `count` is a lower bound.
    pub at_least: bool,
    pub first: i64,
    pub last: i64,
}

/// Walks the due times from `due` whose run time (due + `jitter`) has come by `now`: the
/// latest fires if it is at most `window_ms` (at least [`GRACE_MS`]) late, once; every earlier
/// one is missed, never fired in a burst.
pub fn claim(schedule: &Schedule, due: i64, now: DateTime<Utc>, jitter: i64, window_ms: i64) -> Claim {
    // Due times are walked up to `horizon`, so a jitter longer than the period misses nothing.
    let horizon = now - chrono::Duration::milliseconds(jitter);
    let horizon_ms = horizon.timestamp_millis();
    let mut past = Vec::new();
    let mut cursor = DateTime::from_timestamp_millis(due);
    while let Some(d) = cursor.filter(|d| d.timestamp_millis() <= horizon_ms) {
        if past.len() == MAX_WALK {
            break;
        }
        past.push(d.timestamp_millis());
        cursor = schedule.next_after(d);
    }
    let at_least = cursor.is_some_and(|d| d.timestamp_millis() <= horizon_ms);
    let latest = if at_least {
        // A downtime longer than the walk: the latest due time is found backwards.
        schedule
            .cron
            .find_previous_occurrence(&horizon.with_timezone(&schedule.tz), true)
            .ok()
            .map(|d| d.timestamp_millis())
    } else {
        past.last().copied()
    };
    let next_due = schedule.next_after(horizon).map(|d| d.timestamp_millis());
    let fire = latest.filter(|d| horizon_ms - d <= window_ms.max(GRACE_MS));
    let missed_times: Vec<i64> = past.iter().copied().filter(|d| Some(*d) != fire).collect();
    let last = if at_least {
        latest.filter(|d| Some(*d) != fire)
    } else {
        None
    };
    let missed = missed_times.first().map(|first| Missed {
        count: missed_times.len() as i64 + i64::from(last.is_some()),
        at_least,
        first: *first,
        last: last.or(missed_times.last().copied()).unwrap_or(*first),
    });
    Claim { fire, missed, next_due }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn walk(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.with_timezone(&s.tz).to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn five_and_six_fields_and_aliases_parse_and_the_rest_name_their_field() {
        for ok in [
            "0 9 * * 1-5",
            "*/10 * * * * *",
            "@daily",
            "@hourly",
            "@weekly",
            "@monthly",
            "@yearly",
        ] {
            assert!(Schedule::parse(ok, "UTC").is_ok(), "{ok}");
        }
        for bad in ["", "* * *", "61 * * * *", "0 0 0 * * * 2030", "every day", "0 25 * * *"] {
            let e = Schedule::parse(bad, "UTC").unwrap_err();
            assert_eq!(e[0].field, "cron_schedule", "{bad}");
        }
        let e = Schedule::parse("0 9 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e[0].field, "cron_timezone");
        assert_eq!(Schedule::parse("nope", "Nowhere").unwrap_err().len(), 2);
    }

    #[test]
    fn weekdays_at_nine_in_berlin_follow_the_zone_across_a_change() {
        let s = Schedule::parse("0 9 * * 1-5", "Europe/Berlin").unwrap();
        // Friday 2025-03-28 to Tuesday 2025-04-01: clocks went forward on Sunday 30 March.
        assert_eq!(
            walk(&s, "2025-03-27T10:00:00Z", 3),
            [
                "2025-03-28T09:00:00+01:00",
                "2025-03-31T09:00:00+02:00",
                "2025-04-01T09:00:00+02:00"
            ]
        );
    }

    #[test]
    fn a_due_time_in_the_spring_gap_fires_once_right_after_it() {
        // 02:30 does not exist in Berlin on 2025-03-30 (02:00 → 03:00).
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let times = walk(&s, "2025-03-28T12:00:00Z", 3);
        assert_eq!(times[0], "2025-03-29T02:30:00+01:00");
        assert!(times[1].starts_with("2025-03-30T03:"), "{times:?}");
        assert_eq!(times[2], "2025-03-31T02:30:00+02:00");
    }

    #[test]
    fn a_due_time_in_the_repeated_autumn_hour_fires_once() {
        // 02:30 happens twice in Berlin on 2025-10-26 (03:00 → 02:00).
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            walk(&s, "2025-10-24T12:00:00Z", 3),
            [
                "2025-10-25T02:30:00+02:00",
                "2025-10-26T02:30:00+02:00",
                "2025-10-27T02:30:00+01:00"
            ]
        );
    }

    #[test]
    fn a_long_downtime_misses_all_but_a_recent_time_and_never_bursts() {
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let due = at("2026-01-01T00:00:00Z").timestamp_millis();
        // Back 20 s after 01:00: 00:00 … 00:55 are missed, 01:00 fires.
        let c = claim(&s, due, at("2026-01-01T01:00:20Z"), 0, 0);
        assert_eq!(c.fire, Some(at("2026-01-01T01:00:00Z").timestamp_millis()));
        let m = c.missed.unwrap();
        assert_eq!((m.count, m.at_least, m.first), (12, false, due));
        assert_eq!(m.last, at("2026-01-01T00:55:00Z").timestamp_millis());
        assert_eq!(c.next_due, Some(at("2026-01-01T01:05:00Z").timestamp_millis()));
        // Back at 01:03: 01:00 is three minutes late, past the grace: nothing fires.
        let c = claim(&s, due, at("2026-01-01T01:03:00Z"), 0, 0);
        assert_eq!((c.fire, c.missed.unwrap().count), (None, 13));
        // With a 10-minute catch-up window it fires once, the rest still missed.
        let c = claim(&s, due, at("2026-01-01T01:03:00Z"), 0, 600_000);
        assert_eq!((c.fire.is_some(), c.missed.unwrap().count), (true, 12));
        // On time: one fires, none missed.
        let c = claim(&s, due, at("2026-01-01T00:00:01Z"), 0, 0);
        assert_eq!((c.fire, c.missed), (Some(due), None));
    }

    #[test]
    fn a_long_downtime_of_an_every_second_job_is_not_walked_to_the_end() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let due = at("2026-01-01T00:00:00Z").timestamp_millis();
        let c = claim(&s, due, at("2026-01-01T06:00:00Z"), 0, 0);
        assert_eq!(c.fire, Some(at("2026-01-01T06:00:00Z").timestamp_millis()));
        let m = c.missed.unwrap();
        assert!(m.at_least && m.count == MAX_WALK as i64, "{m:?}");
        assert_eq!(c.next_due, Some(at("2026-01-01T06:00:01Z").timestamp_millis()));
    }

    #[test]
    fn a_jitter_longer_than_the_period_misses_nothing() {
        // Every 5 minutes, each firing 400 s after its due time.
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let jitter = 400_000;
        let due = at("2026-01-01T10:00:00Z").timestamp_millis();
        let c = claim(&s, due, at("2026-01-01T10:06:40Z"), jitter, 0);
        assert_eq!((c.fire, c.missed), (Some(due), None));
        assert_eq!(c.next_due, Some(at("2026-01-01T10:05:00Z").timestamp_millis()));
    }

    #[test]
    fn jitter_is_constant_per_job_and_within_bounds() {
        let job = Uuid::now_v7();
        assert_eq!(jitter_ms(job, 0), 0);
        let j = jitter_ms(job, 30);
        assert!((0..=30_000).contains(&j));
        assert_eq!(j, jitter_ms(job, 30));
    }
}
