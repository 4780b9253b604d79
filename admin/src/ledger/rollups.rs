//! The rollup families the ledger maintains in `usage_rollups`, each told apart by its
//! `granularity`: fine ones that keep every dimension, and coarser ones that drop some (their
//! column holds 0 or '') so that console pages read far fewer rows.

use chrono::{DateTime, Utc};

/// One family: its name, its bucket width and the dimensions it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollup {
    pub granularity: &'static str,
    pub seconds: i64,
    /// Buckets start at `origin + n × seconds` (Unix seconds): 0 for hours and days, a Monday
    /// for weeks.
    pub origin: i64,
    pub key: bool,
    pub end_user: bool,
    /// Model and endpoint.
    pub model: bool,
}

const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;
pub const WEEK: i64 = 7 * DAY;
/// 1970-01-05, the first Monday after the Unix epoch: weekly buckets are ISO weeks (UTC).
pub const MONDAY: i64 = 4 * DAY;

/// Every family an event is added to.
pub const ROLLUPS: [Rollup; 6] = [
    // Fine: the usage API, exports and reconciliation read these.
    Rollup {
        granularity: "hour",
        seconds: HOUR,
        origin: 0,
        key: true,
        end_user: true,
        model: true,
    },
    Rollup {
        granularity: "day",
        seconds: DAY,
        origin: 0,
        key: true,
        end_user: true,
        model: true,
    },
    // Per tenant, model and endpoint: dashboards and explorer pages without keys or users.
    Rollup {
        granularity: "tenant_hour",
        seconds: HOUR,
        origin: 0,
        key: false,
        end_user: false,
        model: true,
    },
    Rollup {
        granularity: "tenant_day",
        seconds: DAY,
        origin: 0,
        key: false,
        end_user: false,
        model: true,
    },
    // Per tenant and key: the explorer's per-key tables and key filters.
    Rollup {
        granularity: "key_day",
        seconds: DAY,
        origin: 0,
        key: true,
        end_user: false,
        model: false,
    },
    // The same per week: a month of per-key sums reads about four weekly rows per key and the
    // daily ones only for the days at either end (`insights`).
    Rollup {
        granularity: "key_week",
        seconds: WEEK,
        origin: MONDAY,
        key: true,
        end_user: false,
        model: false,
    },
];

/// The largest `origin + n × step` at or before `t` (Unix seconds).
pub fn floor_to(t: i64, step: i64, origin: i64) -> i64 {
    t - (t - origin).rem_euclid(step)
}

/// The smallest `origin + n × step` at or after `t` (Unix seconds).
pub fn ceil_to(t: i64, step: i64, origin: i64) -> i64 {
    t + (origin - t).rem_euclid(step)
}

/// The group of a rollup row: bucket start, tenant, key, model, end user, endpoint.
pub type Group = (DateTime<Utc>, i64, i64, String, String, String);

impl Rollup {
    /// Start of the bucket that holds `at`.
    pub fn bucket(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp(floor_to(at.timestamp(), self.seconds, self.origin), 0)
            .unwrap_or(at)
    }

    /// The row of this family that an event with these dimensions adds to.
    pub fn group(
        &self,
        at: DateTime<Utc>,
        tenant_id: Option<i64>,
        key_id: Option<i64>,
        model: &str,
        end_user: Option<&str>,
        endpoint: &str,
    ) -> Group {
        let keep = |kept: bool, value: &str| {
            if kept {
                value.to_string()
            } else {
                String::new()
            }
        };
        (
            self.bucket(at),
            tenant_id.unwrap_or(0),
            if self.key { key_id.unwrap_or(0) } else { 0 },
            keep(self.model, model),
            keep(self.end_user, end_user.unwrap_or_default()),
            keep(self.model, endpoint),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_keeps_its_dimensions() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T13:45:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let groups: Vec<Group> = ROLLUPS
            .iter()
            .map(|r| r.group(at, Some(1), Some(7), "m", Some("u"), "/v1/embeddings"))
            .collect();
        let hour = DateTime::parse_from_rfc3339("2026-11-24T13:00:00Z").unwrap();
        let day = DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z").unwrap();
        let s = |x: &str| x.to_string();
        assert_eq!(
            groups[0],
            (hour.into(), 1, 7, s("m"), s("u"), s("/v1/embeddings"))
        );
        assert_eq!(
            groups[1],
            (day.into(), 1, 7, s("m"), s("u"), s("/v1/embeddings"))
        );
        assert_eq!(
            groups[2],
            (hour.into(), 1, 0, s("m"), s(""), s("/v1/embeddings"))
        );
        assert_eq!(
            groups[3],
            (day.into(), 1, 0, s("m"), s(""), s("/v1/embeddings"))
        );
        assert_eq!(groups[4], (day.into(), 1, 7, s(""), s(""), s("")));
        let monday = DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z").unwrap();
        assert_eq!(groups[5], (monday.into(), 1, 7, s(""), s(""), s("")));
        // A Monday at midnight starts its own week; the Sunday before belongs to the last one.
        let week = ROLLUPS[5];
        assert_eq!(week.bucket(monday.into()), monday);
        let sunday = DateTime::parse_from_rfc3339("2026-11-22T23:59:59Z").unwrap();
        let before = DateTime::parse_from_rfc3339("2026-11-16T00:00:00Z").unwrap();
        assert_eq!(week.bucket(sunday.into()), before);
    }
}
