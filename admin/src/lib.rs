//! The aiaas control plane: sea-orm entities and the services that own tenants, users, API
//! keys, JWT verification keys and the audit log, plus the in-memory credential verifier used on
//! every `/v1` request. The server calls these functions and never writes SQL of its own.

#![cfg_attr(test, allow(clippy::unwrap_used))]
pub mod audit;
pub mod auth;
pub mod budgets;
pub mod console;
pub mod db;
pub mod entity;
pub mod error;
pub mod insights;
pub mod jwt_keys;
pub mod key_changes;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod policy;
pub mod prices;
pub mod sessions;
pub mod tenants;
pub mod usage;
pub mod users;

pub use error::{AdminError, Result, Text};

/// Which objects an actor may touch: the whole platform (operators, the CLI) or one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Platform,
    Tenant(i64),
}

impl Scope {
    pub fn covers(self, tenant_id: i64) -> bool {
        match self {
            Scope::Platform => true,
            Scope::Tenant(own) => own == tenant_id,
        }
    }
}

/// Parse a lifetime such as `90s`, `15m`, `1h`, `30d` or `2w`.
pub fn parse_duration(text: &str) -> Result<chrono::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| {
        AdminError::invalid(
            "duration",
            Text::new(
                format!("`{text}` is not a duration like 30d"),
                format!("`{text}` 不是有效的时长（例如 30d）"),
            ),
        )
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(AdminError::invalid(
                "duration",
                Text::new(
                    format!("`{text}`: use a number followed by s, m, h, d or w"),
                    format!("`{text}`：请填写数字加单位 s、m、h、d 或 w"),
                ),
            ))
        }
    };
    n.checked_mul(seconds)
        .filter(|s| *s > 0 && *s <= 10 * 366 * 86_400)
        .map(chrono::Duration::seconds)
        .ok_or_else(|| {
            AdminError::invalid(
                "duration",
                Text::new(
                    format!("`{text}` is out of range"),
                    format!("`{text}` 超出范围"),
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_operators_write_them() {
        assert_eq!(
            parse_duration("90s").unwrap(),
            chrono::Duration::seconds(90)
        );
        assert_eq!(parse_duration("1h").unwrap(), chrono::Duration::hours(1));
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        for bad in ["", "d", "10", "5y", "-1d", "0s", "99999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tenant_scope_covers_only_its_tenant() {
        assert!(Scope::Platform.covers(7));
        assert!(Scope::Tenant(7).covers(7));
        assert!(!Scope::Tenant(7).covers(8));
    }
}
