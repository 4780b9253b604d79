//! The arithmetic of one per-minute limit: a bucket of `capacity` units (the burst allowance)
//! that refills at `per_minute` units a minute, evaluated lazily at each use (the same shape as
//! GCRA). Requests take 1 unit; tokens take the request's worst case at admission and get the
//! unused part back when it ends. The Redis script implements exactly this arithmetic.

/// Microseconds: the clock of every bucket (a process-local monotonic clock, or Redis `TIME`).
pub type Micros = i64;

const MINUTE_US: f64 = 60_000_000.0;

/// One limit's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_minute: f64,
    pub capacity: f64,
}

impl Rate {
    pub fn new(per_minute: i64, burst: Option<i64>) -> Self {
        Self {
            per_minute: per_minute as f64,
            capacity: burst.unwrap_or(per_minute) as f64,
        }
    }

    /// Time to refill `units`.
    pub fn time_for(&self, units: f64) -> Micros {
        if units <= 0.0 {
            0
        } else {
            (units * MINUTE_US / self.per_minute).ceil() as Micros
        }
    }
}

/// A bucket's state: its level (units available) when last touched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub level: f64,
    pub at: Micros,
}

impl Bucket {
    pub fn full(rate: Rate, now: Micros) -> Self {
        Self {
            level: rate.capacity,
            at: now,
        }
    }

    /// The level now, refilled since the last touch and clamped to the capacity (a lowered
    /// limit takes effect at once).
    pub fn level_at(&self, rate: Rate, now: Micros) -> f64 {
        let elapsed = (now - self.at).max(0) as f64;
        (self.level + elapsed * rate.per_minute / MINUTE_US).min(rate.capacity)
    }

    /// What the headers say about this bucket now.
    pub fn status(&self, rate: Rate, now: Micros) -> Status {
        let level = self.level_at(rate, now);
        Status {
            limit: rate.per_minute as u64,
            remaining: level.max(0.0).floor() as u64,
            reset_us: rate.time_for(rate.capacity - level),
        }
    }

    /// `Ok(level after)` if `cost` fits now; `Err(wait)` with the time until it would.
    pub fn check(&self, rate: Rate, now: Micros, cost: f64) -> Result<f64, Micros> {
        let level = self.level_at(rate, now);
        if cost <= level {
            Ok(level - cost)
        } else {
            Err(rate.time_for(cost - level).max(1))
        }
    }

    /// Give back `units` (negative: take more), never above the capacity.
    pub fn refund(&mut self, rate: Rate, now: Micros, units: f64) {
        self.level = (self.level_at(rate, now) + units).min(rate.capacity);
        self.at = now;
    }
}

/// One limit as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub limit: u64,
    pub remaining: u64,
    pub reset_us: Micros,
}

impl Status {
    /// The stricter of two statuses: the one with less left.
    pub fn stricter(self, other: Option<Status>) -> Status {
        match other {
            Some(o) if o.remaining < self.remaining => o,
            Some(o) if o.remaining == self.remaining && o.reset_us > self.reset_us => o,
            _ => self,
        }
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `6m0s`, `1s`, `120ms`, `1h2m3s`.
pub fn format_reset(us: Micros) -> String {
    let ms = (us.max(0) + 999) / 1000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_s = ms as f64 / 1000.0;
    let hours = (total_s / 3600.0).floor() as i64;
    let minutes = ((total_s - hours as f64 * 3600.0) / 60.0).floor() as i64;
    let seconds = total_s - hours as f64 * 3600.0 - minutes as f64 * 60.0;
    let seconds = if seconds.fract() < 0.0005 {
        format!("{}s", seconds.round() as i64)
    } else {
        let text = format!("{seconds:.3}");
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_takes_its_burst_then_refuses_with_the_wait() {
        let rate = Rate::new(60, None); // one a second, 60 at once
        let mut bucket = Bucket::full(rate, 0);
        for _ in 0..60 {
            bucket.level = bucket.check(rate, 0, 1.0).unwrap();
        }
        assert_eq!(bucket.check(rate, 0, 1.0), Err(1_000_000));
        assert_eq!(bucket.check(rate, 500_000, 1.0), Err(500_000));
        assert!(bucket.check(rate, 1_000_000, 1.0).is_ok());
        assert_eq!(bucket.status(rate, 0).remaining, 0);
        assert_eq!(bucket.status(rate, 0).reset_us, 60_000_000);
    }

    #[test]
    fn a_small_burst_caps_what_arrives_at_once() {
        let rate = Rate::new(600, Some(2));
        let mut bucket = Bucket::full(rate, 0);
        bucket.level = bucket.check(rate, 0, 1.0).unwrap();
        bucket.level = bucket.check(rate, 0, 1.0).unwrap();
        assert_eq!(bucket.check(rate, 0, 1.0), Err(100_000));
        // A long pause refills only up to the burst.
        assert_eq!(bucket.status(rate, 3_600_000_000).remaining, 2);
    }

    #[test]
    fn refunds_return_unused_tokens_up_to_the_capacity() {
        let rate = Rate::new(1000, None);
        let mut bucket = Bucket::full(rate, 0);
        bucket.level = bucket.check(rate, 0, 800.0).unwrap();
        bucket.at = 0;
        bucket.refund(rate, 0, 700.0);
        assert_eq!(bucket.status(rate, 0).remaining, 900);
        bucket.refund(rate, 0, 700.0);
        assert_eq!(bucket.status(rate, 0).remaining, 1000);
        // A request bigger than the bucket can never fit.
        assert!(bucket.check(rate, 0, 1001.0).is_err());
    }

    #[test]
    fn resets_are_written_the_way_openai_writes_them() {
        assert_eq!(format_reset(120_000), "120ms");
        assert_eq!(format_reset(1_000_000), "1s");
        assert_eq!(format_reset(360_000_000), "6m0s");
        assert_eq!(format_reset(1_500_000), "1.5s");
        assert_eq!(format_reset(3_723_000_000), "1h2m3s");
        assert_eq!(format_reset(0), "0ms");
        assert_eq!(format_reset(1), "1ms");
    }

    #[test]
    fn the_stricter_status_is_the_one_with_less_left() {
        let key = Status {
            limit: 100,
            remaining: 50,
            reset_us: 10,
        };
        let tenant = Status {
            limit: 1000,
            remaining: 20,
            reset_us: 5,
        };
        assert_eq!(key.stricter(Some(tenant)), tenant);
        assert_eq!(tenant.stricter(Some(key)), tenant);
        assert_eq!(key.stricter(None), key);
    }
}
