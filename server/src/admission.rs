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
use aiaas_admin::budgets::{Exhausted, Reservation, Unit};
use aiaas_admin::entity::model_price;
use aiaas_admin::ledger::{Ledger, UsageEvent};
use aiaas_admin::policy::Policies;
use aiaas_admin::prices::cost_micros;
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
    pub ledger: Ledger,
}

/// What the ledger will say about a request, known at admission.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub model: String,
    pub endpoint: &'static str,
    pub stream: bool,
    /// The request's `user` field (a JWT `sub` takes precedence).
    pub user: Option<String>,
}

/// The request id the middleware gave this request (`x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn of(req: &actix_web::HttpRequest) -> String {
        req.extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()))
    }
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
    pub async fn admit<F>(
        &self,
        caller: &Caller,
        meta: RequestMeta,
        estimate: F,
    ) -> Result<Admitted, ApiError>
    where
        F: std::future::Future<Output = Result<Demand, ApiError>>,
    {
        let draft = Draft::new(caller, meta);
        let subjects = self.subjects(caller);
        let budgets = self.policies.budgets_for(caller.tenant_id, caller.key_id);
        let counts_tokens = !budgets.is_empty() || subjects.iter().any(|s| s.limits.tpm.is_some());
        if subjects.is_empty() && budgets.is_empty() {
            return Ok(Admitted::free(self.clone(), draft));
        }
        let demand = if counts_tokens {
            estimate.await?
        } else {
            Demand::default()
        };
        let tokens = demand.total();
        let price = self.policies.price_now(&draft.meta.model);
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
            let amount_for = |budget: &aiaas_admin::budgets::Budget| match budget.unit {
                Unit::Tokens => tokens as i64,
                Unit::Micros => price.as_ref().map_or(0, |p| {
                    cost_micros(p, demand.prompt as i64, demand.completion as i64)
                }),
            };
            match self.policies.reserve(&budgets, amount_for).await {
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
            draft: Some(draft),
            failed: None,
            price,
        })
    }
}

/// The worst case of a request at admission: its prompt and the most it may generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub prompt: u64,
    pub completion: u64,
}

impl Demand {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

impl std::ops::Add for Demand {
    type Output = Demand;
    fn add(self, other: Demand) -> Demand {
        Demand {
            prompt: self.prompt + other.prompt,
            completion: self.completion + other.completion,
        }
    }
}

/// The usage event of a request, before its outcome is known.
struct Draft {
    meta: RequestMeta,
    tenant_id: Option<i64>,
    key_id: Option<i64>,
    end_user: Option<String>,
    started_at: chrono::DateTime<chrono::Utc>,
    first_token_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Draft {
    fn new(caller: &Caller, meta: RequestMeta) -> Self {
        let anonymous = caller.credential == aiaas_admin::auth::Credential::Anonymous;
        Self {
            tenant_id: (!anonymous).then_some(caller.tenant_id),
            key_id: caller.key_id,
            end_user: caller.subject.clone().or_else(|| meta.user.clone()),
            meta,
            started_at: chrono::Utc::now(),
            first_token_at: None,
        }
    }

    fn event(self, usage: Usage, status: &str, http_status: u16) -> UsageEvent {
        UsageEvent {
            request_id: self.meta.request_id,
            tenant_id: self.tenant_id,
            key_id: self.key_id,
            end_user: self.end_user,
            model: self.meta.model,
            endpoint: self.meta.endpoint.to_string(),
            prompt_tokens: usage.prompt_tokens as i64,
            completion_tokens: usage.completion_tokens as i64,
            cached_tokens: None,
            status: status.to_string(),
            http_status: i32::from(http_status),
            stream: self.meta.stream,
            started_at: self.started_at,
            first_token_at: self.first_token_at,
            finished_at: chrono::Utc::now(),
        }
    }
}

fn quota_message(e: &Exhausted) -> String {
    let whom = if e.key_id.is_some() {
        "this API key"
    } else {
        "your organization"
    };
    let (what, show): (&str, fn(i64) -> String) = match e.unit {
        Unit::Tokens => ("token budget", |n| format!("{n} tokens")),
        Unit::Micros => ("spend budget", aiaas_admin::prices::format_micros),
    };
    format!(
        "You exceeded your current quota: the {what} of {whom} is {} for this period, {} are \
         used or held by running requests, and this request may use up to {}. The period ends \
         at {}.",
        show(e.cap),
        show(e.used),
        show(e.requested),
        e.period_end.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// An admitted request: settles exactly once (finish, abandon, or drop), and records its usage
/// event in the ledger at that moment.
pub struct Admitted {
    gate: Gate,
    grant: Option<Grant>,
    reservations: Vec<Reservation>,
    headers: Option<RateHeaders>,
    /// The worst case reserved.
    tokens: u64,
    meters: Vec<UsageMeter>,
    /// `None` once settled.
    draft: Option<Draft>,
    /// The HTTP status of an error the request ended with after its response began.
    failed: Option<u16>,
    /// The model's price when the request started (for money budgets).
    price: Option<model_price::Model>,
}

impl Admitted {
    fn free(gate: Gate, draft: Draft) -> Self {
        Self {
            gate,
            grant: None,
            reservations: Vec::new(),
            headers: None,
            tokens: 0,
            meters: Vec::new(),
            draft: Some(draft),
            failed: None,
            price: None,
        }
    }

    pub fn headers(&self) -> Option<&RateHeaders> {
        self.headers.as_ref()
    }

    /// Read what a started generation used if the request ends without a final count.
    pub fn watch(&mut self, meter: UsageMeter) {
        self.meters.push(meter);
    }

    /// The first token went out (once; later calls change nothing).
    pub fn first_token(&mut self) {
        if let Some(draft) = &mut self.draft {
            draft.first_token_at.get_or_insert_with(chrono::Utc::now);
        }
    }

    /// The request ended with an error after its response began (an SSE error event): it is
    /// recorded with this status and charged what the engine metered when it is dropped.
    pub fn fail(&mut self, http_status: u16) {
        self.failed.get_or_insert(http_status);
    }

    /// The request finished: charge what it used.
    pub fn finish(&mut self, usage: Usage) {
        self.settle(usage, "ok", 200, false);
    }

    /// Nothing ran (refused by the engine, or dropped from the queue): charge nothing, give the
    /// request back, and record the refusal.
    pub fn abandon(&mut self, http_status: u16) {
        let status = match http_status {
            503 => "rejected",
            504 => "timeout",
            _ => "error",
        };
        self.settle(Usage::default(), status, http_status, true);
    }

    /// Put the `x-ratelimit-*` headers of this admission on a response.
    pub fn stamp(&self, mut response: actix_web::HttpResponse) -> actix_web::HttpResponse {
        if let Some(rate) = &self.headers {
            insert_rate_headers(response.headers_mut(), rate);
        }
        response
    }

    fn settle(&mut self, usage: Usage, status: &str, http_status: u16, refund_request: bool) {
        let Some(draft) = self.draft.take() else {
            return;
        };
        // The event is durable (journaled) before anything else happens.
        self.gate
            .ledger
            .record(&draft.event(usage, status, http_status));
        let used = usage.total_tokens() as u64;
        let cost = self.price.as_ref().map_or(0, |p| {
            cost_micros(
                p,
                usage.prompt_tokens as i64,
                usage.completion_tokens as i64,
            )
        });
        let gate = self.gate.clone();
        let grant = self.grant.take();
        let reservations = std::mem::take(&mut self.reservations);
        if grant.is_none() && reservations.is_empty() {
            return;
        }
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
                let actual = |r: &Reservation| match r.unit {
                    Unit::Tokens => used as i64,
                    Unit::Micros => cost,
                };
                match gate.policies.settle(&reservations, actual).await {
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
        if self.draft.is_none() {
            return;
        }
        // Ended without a final count (client gone, or an error mid-stream): charge what the
        // engine did, or the reserved worst case when nothing was metered.
        let usage = if self.meters.is_empty() {
            Usage {
                prompt_tokens: self.tokens as usize,
                completion_tokens: 0,
            }
        } else {
            self.meters.iter().fold(Usage::default(), |mut sum, m| {
                let u = m.usage();
                sum.prompt_tokens += u.prompt_tokens;
                sum.completion_tokens += u.completion_tokens;
                sum
            })
        };
        match self.failed {
            Some(code) => self.settle(usage, "error", code, false),
            None => self.settle(usage, "cancelled", 499, false),
        }
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
