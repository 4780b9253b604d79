//! The rollup families the ledger maintains in `usage_rollups`, each told apart by its
//! `granularity`: fine ones that keep every dimension, and coarser ones that drop some (their
//! column holds 0 or '') so that console pages read far fewer rows.

use chrono::{DateTime, DurationRound, Utc};

/// One family: its name, its bucket width and the dimensions it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollup {
    pub granularity: &'static str,
    pub seconds: i64,
    pub key: bool,
    pub end_user: bool,
    /// Model and endpoint.
    pub model: bool,
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Every family an event is added to.
pub const ROLLUPS: [Rollup; 5] = [
    // Fine: the usage API, exports and reconciliation read these.
    Rollup {
        granularity: "hour",
        seconds: HOUR,
        key: true,
        end_user: true,
        model: true,
    },
    Rollup {
        granularity: "day",
        seconds: DAY,
        key: true,
        end_user: true,
        model: true,
    },
    // Per tenant, model and endpoint: dashboards and explorer pages without keys or users.
    Rollup {
        granularity: "tenant_hour",
        seconds: HOUR,
        key: false,
        end_user: false,
        model: true,
    },
    Rollup {
        granularity: "tenant_day",
        seconds: DAY,
        key: false,
        end_user: false,
        model: true,
    },
    // Per tenant and key: the explorer's per-key tables and key filters.
    Rollup {
        granularity: "key_day",
        seconds: DAY,
        key: true,
        end_user: false,
        model: false,
    },
];

/// The group of a rollup row: bucket start, tenant, key, model, end user, endpoint.
pub type Group = (DateTime<Utc>, i64, i64, String, String, String);

impl Rollup {
    /// Start of the bucket that holds `at`.
    pub fn bucket(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(chrono::Duration::seconds(self.seconds))
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
    }
}
