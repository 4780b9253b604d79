//! Admission of one `/v1` request, before the first byte of the response: the key's and the
//! tenant's rate limits (requests, tokens at the worst case, concurrency), then the budgets
//! (the worst case reserved in the database). What is admitted is held by an [`Admitted`] guard
//! that settles to the real token count exactly once: when the handler finishes it, or when it is
//! dropped (client gone: the engine's meter says what was used).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::HttpMessage;
use aiaas_admin::auth::Caller;
use aiaas_admin::budgets::{Exhausted, Reservation};
use aiaas_admin::policy::Policies;
use aiaas_engine::{Usage, UsageMeter};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::limits::{format_reset, Grant, Limiter, Outcome, RateHeaders, Subject, SubjectKind};
use crate::metrics::Metrics;

/// Background settlements still running; shutdown waits for them.
#[derive(Clone, Default)]
pub struct Pending {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Pending {
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.count.fetch_add(1, Ordering::AcqRel);
        let pending = self.clone();
        tokio::spawn(async move {
            work.await;
            if pending.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                pending.idle.notify_waiters();
            }
        });
    }

    /// Wait until every settlement has been written (or `limit` passes).
    pub async fn drain(&self, limit: Duration) {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!(
                pending = self.count.load(Ordering::Acquire),
                "shutdown: settlements still running"
            );
        }
    }
}

/// Everything admission needs; part of `AppState`.
#[derive(Clone)]
pub struct Gate {
    pub limiter: Limiter,
    pub policies: Policies,
    pub pending: Pending,
    pub metrics: Metrics,
}

impl Gate {
    /// The limits that apply to this caller: its key's and its tenant's.
    pub fn subjects(&self, caller: &Caller) -> Vec<Subject> {
        let mut subjects = Vec::with_capacity(2);
        if let Some(key_id) = caller.key_id {
            if !caller.key_limits.is_unlimited() {
                subjects.push(Subject {
                    kind: SubjectKind::Key,
                    id: key_id,
                    limits: caller.key_limits,
                });
            }
        }
        let tenant = self.policies.tenant_limits(caller.tenant_id);
        if !tenant.is_unlimited() {
            subjects.push(Subject {
                kind: SubjectKind::Tenant,
                id: caller.tenant_id,
                limits: tenant,
            });
        }
        subjects
    }

    /// Admit a request whose worst case in tokens `estimate` computes (called only when a token
    /// limit or a budget needs it), or refuse it with 429.
    pub async fn admit<F>(&self, caller: &Caller, estimate: F) -> Result<Admitted, ApiError>
    where
        F: std::future::Future<Output = Result<u64, ApiError>>,
    {
        let subjects = self.subjects(caller);
        let budgets = self.policies.budgets_for(caller.tenant_id, caller.key_id);
        let counts_tokens = !budgets.is_empty() || subjects.iter().any(|s| s.limits.tpm.is_some());
        if subjects.is_empty() && budgets.is_empty() {
            return Ok(Admitted::free(self.clone()));
        }
        let tokens = if counts_tokens { estimate.await? } else { 0 };
        let (grant, headers) = match self.limiter.acquire(&subjects, tokens).await {
            Outcome::Admitted(grant, headers) => (grant, headers),
            Outcome::Refused(refusal, headers) => {
                let reason = match refusal.dimension {
                    crate::limits::Dimension::Requests => "requests",
                    crate::limits::Dimension::Tokens => "tokens",
                    crate::limits::Dimension::Concurrency => "concurrency",
                    crate::limits::Dimension::TooLarge => "too_large",
                };
                self.metrics.refused(reason);
                return Err(ApiError::rate_limited(&refusal, headers));
            }
        };
        let reservations = if budgets.is_empty() {
            Vec::new()
        } else {
            match self.policies.reserve(&budgets, tokens as i64).await {
                Ok(Ok(held)) => held,
                Ok(Err(exhausted)) => {
                    self.limiter.release(&grant, 0, true).await;
                    self.metrics.refused("budget");
                    return Err(ApiError::insufficient_quota(
                        quota_message(&exhausted),
                        Some(headers),
                    ));
                }
                Err(err) => {
                    self.limiter.release(&grant, 0, true).await;
                    tracing::error!(error = %err, "budget reservation failed");
                    return Err(ApiError::overloaded(
                        "Budgets cannot be checked right now, please retry shortly.",
                        1,
                    ));
                }
            }
        };
        Ok(Admitted {
            gate: self.clone(),
            grant: Some(grant),
            reservations,
            headers: Some(headers),
            tokens,
            meters: Vec::new(),
            settled: false,
        })
    }
}

fn quota_message(e: &Exhausted) -> String {
    let whom = if e.key_id.is_some() {
        "this API key"
    } else {
        "your organization"
    };
    format!(
        "You exceeded your current quota: the token budget of {whom} is {} for this period, {} \
         are used or held by running requests, and this request may use up to {}. The period \
         ends at {}.",
        e.cap,
        e.used,
        e.requested,
        e.period_end.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// An admitted request: settles exactly once (finish, abandon, or drop).
pub struct Admitted {
    gate: Gate,
    grant: Option<Grant>,
    reservations: Vec<Reservation>,
    headers: Option<RateHeaders>,
    /// The worst case reserved.
    tokens: u64,
    meters: Vec<UsageMeter>,
    settled: bool,
}

impl Admitted {
    fn free(gate: Gate) -> Self {
        Self {
            gate,
            grant: None,
            reservations: Vec::new(),
            headers: None,
            tokens: 0,
            meters: Vec::new(),
            settled: true,
        }
    }

    pub fn headers(&self) -> Option<&RateHeaders> {
        self.headers.as_ref()
    }

    /// Read what a started generation used if the request ends without a final count.
    pub fn watch(&mut self, meter: UsageMeter) {
        self.meters.push(meter);
    }

    /// The request finished: charge what it used.
    pub fn finish(&mut self, usage: Usage) {
        self.settle(usage.total_tokens() as u64, false);
    }

    /// Nothing ran (refused by the engine, or dropped from the queue): charge nothing and give the
    /// request back.
    pub fn abandon(&mut self) {
        self.settle(0, true);
    }

    /// Put the `x-ratelimit-*` headers of this admission on a response.
    pub fn stamp(&self, mut response: actix_web::HttpResponse) -> actix_web::HttpResponse {
        if let Some(rate) = &self.headers {
            insert_rate_headers(response.headers_mut(), rate);
        }
        response
    }

    fn settle(&mut self, used: u64, refund_request: bool) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let gate = self.gate.clone();
        let grant = self.grant.take();
        let reservations = std::mem::take(&mut self.reservations);
        if used > self.tokens && !reservations.is_empty() {
            tracing::warn!(
                used,
                reserved = self.tokens,
                "a request used more tokens than its reserved worst case"
            );
        }
        self.gate.pending.spawn(async move {
            if let Some(grant) = &grant {
                gate.limiter.release(grant, used, refund_request).await;
            }
            if reservations.is_empty() {
                return;
            }
            for attempt in 1..=5 {
                match gate.policies.settle(&reservations, used as i64).await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(attempt, error = %err, "settling a budget reservation failed");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
            tracing::error!(
                "a budget reservation could not be settled; the sweeper will release it"
            );
        });
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Ended without a final count (client gone mid-request): charge what the engine did, or
        // the reserved worst case when nothing was metered.
        let used = if self.meters.is_empty() {
            self.tokens
        } else {
            self.meters
                .iter()
                .map(|m| m.usage().total_tokens() as u64)
                .sum()
        };
        self.settle(used, false);
    }
}

/// Write the `x-ratelimit-*` headers (only for the dimensions that have a limit).
pub fn insert_rate_headers(headers: &mut HeaderMap, rate: &RateHeaders) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some(r) = rate.requests {
        put("x-ratelimit-limit-requests", r.limit.to_string());
        put("x-ratelimit-remaining-requests", r.remaining.to_string());
        put("x-ratelimit-reset-requests", format_reset(r.reset_us));
    }
    if let Some(t) = rate.tokens {
        put("x-ratelimit-limit-tokens", t.limit.to_string());
        put("x-ratelimit-remaining-tokens", t.remaining.to_string());
        put("x-ratelimit-reset-tokens", format_reset(t.reset_us));
    }
}

/// After a `/v1` handler: a response of an authenticated caller that carries no `x-ratelimit-*`
/// headers (a refusal before admission, `/v1/models`) gets the current state, without charge.
pub async fn add_missing_rate_headers(res: &mut actix_web::dev::ServiceResponse) {
    if res.headers().contains_key("x-ratelimit-limit-requests")
        || res.headers().contains_key("x-ratelimit-limit-tokens")
    {
        return;
    }
    let scope = res
        .request()
        .extensions()
        .get::<crate::auth::LimitScope>()
        .copied();
    let Some(scope) = scope else {
        return;
    };
    let Some(state) = res
        .request()
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .cloned()
    else {
        return;
    };
    let subjects = state.gate.subjects(&scope.caller());
    if subjects.is_empty() {
        return;
    }
    let rate = state.gate.limiter.peek(&subjects).await;
    insert_rate_headers(res.headers_mut(), &rate);
}
