//! Rate limits on the request path: requests per minute, tokens per minute (reserved at the worst
//! case, settled to the real count) and concurrent requests, for the key and for its tenant at
//! once (the stricter wins; a request is admitted by both or charged to neither).
//!
//! In-process by default (`local`); shared by every replica through one atomic Redis script per
//! check when `limits.redis_url` is set (`redis`). If Redis cannot be reached the limiter keeps
//! serving with its in-process buckets, logs the switch, reports it on `/ready`, and tries Redis
//! again every second.
//!
//! Why not `governor` (named in DESIGN.md): admission must check the key's and the tenant's
//! limits together and charge both or neither, give unused tokens back when a request ends, and
//! read the state for headers without consuming it. governor can do none of these (a cell once
//! taken cannot be returned, and each limiter checks alone), so a request refused by the tenant
//! would still spend the key's allowance. The bucket here is the same GCRA-style arithmetic,
//! written once and mirrored by the Redis script.

pub mod bucket;
mod local;
mod redis;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiaas_admin::limits::Limits;

pub use bucket::{format_reset, Micros, Status};

/// Whose limits these are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    Key,
    Tenant,
}

impl SubjectKind {
    pub fn describe(self) -> &'static str {
        match self {
            SubjectKind::Key => "this API key",
            SubjectKind::Tenant => "your organization",
        }
    }

    fn tag(self) -> char {
        match self {
            SubjectKind::Key => 'k',
            SubjectKind::Tenant => 't',
        }
    }
}

/// One set of limits to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subject {
    pub kind: SubjectKind,
    pub id: i64,
    pub limits: Limits,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    Tokens,
    Concurrency,
    /// The request alone is bigger than the tokens-per-minute burst: it can never fit.
    TooLarge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub dimension: Dimension,
    pub kind: SubjectKind,
    pub limit: u64,
    pub requested: u64,
    /// Time until the request would fit; `None` when it never will.
    pub retry_after_us: Option<Micros>,
}

/// What the `x-ratelimit-*` headers report: the stricter subject per dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateHeaders {
    pub requests: Option<Status>,
    pub tokens: Option<Status>,
}

impl RateHeaders {
    fn add(&mut self, requests: Option<Status>, tokens: Option<Status>) {
        if let Some(r) = requests {
            self.requests = Some(r.stricter(self.requests));
        }
        if let Some(t) = tokens {
            self.tokens = Some(t.stricter(self.tokens));
        }
    }
}

/// Which store admitted a request (its release goes to the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Redis,
}

/// What one admitted request holds: give it back with [`Limiter::release`].
#[derive(Debug, Clone)]
pub struct Grant {
    pub backend: Backend,
    pub lease: String,
    pub subjects: Vec<Subject>,
    pub tokens: u64,
}

pub enum Outcome {
    Admitted(Grant, RateHeaders),
    Refused(Refusal, RateHeaders),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterMode {
    Local,
    Redis,
    /// Redis is configured but unreachable: in-process limits for now.
    Degraded,
}

impl LimiterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LimiterMode::Local => "local",
            LimiterMode::Redis => "redis",
            LimiterMode::Degraded => "local (redis unreachable)",
        }
    }
}

/// The limiter of one process. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    local: Arc<local::Local>,
    redis: Option<Arc<redis::Shared>>,
    health: Arc<Health>,
}

struct Health {
    epoch: Instant,
    healthy: AtomicBool,
    /// Micros since `epoch` before which Redis is not tried again.
    retry_at: AtomicI64,
}

const REDIS_RETRY: Duration = Duration::from_secs(1);

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    pub timeout: Duration,
    pub lease: Duration,
}

impl Limiter {
    pub fn new(redis: Option<RedisSettings>) -> anyhow::Result<Self> {
        let redis = redis.map(redis::Shared::new).transpose()?.map(Arc::new);
        Ok(Self {
            local: Arc::new(local::Local::new()),
            redis,
            health: Arc::new(Health {
                epoch: Instant::now(),
                healthy: AtomicBool::new(true),
                retry_at: AtomicI64::new(0),
            }),
        })
    }

    pub fn mode(&self) -> LimiterMode {
        match &self.redis {
            None => LimiterMode::Local,
            Some(_) if self.health.healthy.load(Ordering::Relaxed) => LimiterMode::Redis,
            Some(_) => LimiterMode::Degraded,
        }
    }

    /// The shared store, unless it failed less than a second ago.
    fn redis(&self) -> Option<&redis::Shared> {
        let redis = self.redis.as_deref()?;
        if self.health.healthy.load(Ordering::Relaxed) {
            return Some(redis);
        }
        let now = self.health.epoch.elapsed().as_micros() as i64;
        let retry_at = self.health.retry_at.load(Ordering::Relaxed);
        // One caller per second gets to try Redis again.
        (now >= retry_at
            && self
                .health
                .retry_at
                .compare_exchange(
                    retry_at,
                    now + REDIS_RETRY.as_micros() as i64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok())
        .then_some(redis)
    }

    fn redis_ok(&self) {
        if !self.health.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("rate limits: Redis is reachable again; limits are shared again");
        }
    }

    fn redis_failed(&self, err: &::redis::RedisError) {
        let now = self.health.epoch.elapsed().as_micros() as i64;
        self.health
            .retry_at
            .store(now + REDIS_RETRY.as_micros() as i64, Ordering::Relaxed);
        if self.health.healthy.swap(false, Ordering::Relaxed) {
            tracing::error!(error = %err,
                "rate limits: Redis unreachable; enforcing per-process limits until it is back");
        } else {
            tracing::debug!(error = %err, "rate limits: Redis still unreachable");
        }
    }

    /// Admit a request costing `tokens` (its worst case) against every subject, or refuse it.
    pub async fn acquire(&self, subjects: &[Subject], tokens: u64) -> Outcome {
        if let Some(redis) = self.redis() {
            // Only a shared concurrency slot needs a name of its own.
            let lease = uuid::Uuid::new_v4().simple().to_string();
            match redis.acquire(subjects, tokens, &lease).await {
                Ok(outcome) => {
                    self.redis_ok();
                    return outcome;
                }
                Err(err) => self.redis_failed(&err),
            }
        }
        self.local.acquire(subjects, tokens, String::new())
    }

    /// End a request: return the tokens it did not use (`used` may exceed the reservation, then
    /// the difference is taken), its concurrency slot, and with `refund_request` the request
    /// itself (it never ran: refused by a budget after the limiter admitted it).
    pub async fn release(&self, grant: &Grant, used: u64, refund_request: bool) {
        match grant.backend {
            Backend::Local => self.local.release(grant, used, refund_request),
            Backend::Redis => {
                let Some(redis) = self.redis.as_deref() else {
                    return;
                };
                if let Err(err) = redis.release(grant, used, refund_request).await {
                    // The concurrency lease expires by itself; unreturned tokens are the cost.
                    tracing::warn!(error = %err, "rate limits: returning a grant to Redis failed");
                }
            }
        }
    }

    /// The headers for these subjects now, without consuming anything.
    pub async fn peek(&self, subjects: &[Subject]) -> RateHeaders {
        if let Some(redis) = self.redis() {
            match redis.peek(subjects).await {
                Ok(headers) => {
                    self.redis_ok();
                    return headers;
                }
                Err(err) => self.redis_failed(&err),
            }
        }
        self.local.peek(subjects)
    }
}
