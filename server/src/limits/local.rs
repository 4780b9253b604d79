//! In-process limits: every subject's buckets and in-flight count in one map under one short
//! lock, so checking the key and its tenant and charging both is a single atomic step.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::bucket::{Bucket, Micros, Rate};
use super::{Backend, Dimension, Grant, Outcome, RateHeaders, Refusal, Subject, SubjectKind};

#[derive(Default)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    in_flight: u64,
}

pub(super) struct Local {
    epoch: Instant,
    subjects: Mutex<HashMap<(SubjectKind, i64), State>>,
}

/// Entries beyond this many are pruned of idle, full buckets.
const PRUNE_AT: usize = 200_000;

pub(super) fn rates(subject: &Subject) -> (Option<Rate>, Option<Rate>) {
    let l = &subject.limits;
    (
        l.rpm.map(|rpm| Rate::new(rpm, l.rpm_burst)),
        l.tpm.map(|tpm| Rate::new(tpm, l.tpm_burst)),
    )
}

impl Local {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            subjects: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SubjectKind, i64), State>> {
        self.subjects.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn acquire(&self, subjects: &[Subject], tokens: u64, lease: String) -> Outcome {
        let now = self.now();
        let mut map = self.lock();
        if map.len() > PRUNE_AT {
            map.retain(|_, s| s.in_flight > 0 || s.requests.is_some() || s.tokens.is_some());
        }
        let mut refusal: Option<Refusal> = None;
        let mut levels = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let state = map.entry((subject.kind, subject.id)).or_default();
            let (request_rate, token_rate) = rates(subject);
            let mut refuse = |dimension, limit: i64, requested: u64, wait: Option<Micros>| {
                refusal.get_or_insert(Refusal {
                    dimension,
                    kind: subject.kind,
                    limit: limit as u64,
                    requested,
                    retry_after_us: wait,
                });
            };
            if let Some(max) = subject.limits.max_concurrent {
                if state.in_flight >= max as u64 {
                    refuse(Dimension::Concurrency, max, 1, Some(1_000_000));
                }
            }
            let request_level = request_rate.map(|rate| {
                let bucket = *state.requests.get_or_insert(Bucket::full(rate, now));
                bucket.check(rate, now, 1.0).unwrap_or_else(|wait| {
                    refuse(Dimension::Requests, rate.per_minute as i64, 1, Some(wait));
                    0.0
                })
            });
            let token_level = token_rate.filter(|_| tokens > 0).map(|rate| {
                let bucket = *state.tokens.get_or_insert(Bucket::full(rate, now));
                if tokens as f64 > rate.capacity {
                    refuse(Dimension::TooLarge, rate.per_minute as i64, tokens, None);
                    return 0.0;
                }
                bucket
                    .check(rate, now, tokens as f64)
                    .unwrap_or_else(|wait| {
                        refuse(
                            Dimension::Tokens,
                            rate.per_minute as i64,
                            tokens,
                            Some(wait),
                        );
                        0.0
                    })
            });
            levels.push((request_level, token_level));
        }
        if let Some(refusal) = refusal {
            let headers = headers(&map, subjects, now);
            return Outcome::Refused(refusal, headers);
        }
        for (subject, (request_level, token_level)) in subjects.iter().zip(levels) {
            let state = map.entry((subject.kind, subject.id)).or_default();
            if let Some(level) = request_level {
                state.requests = Some(Bucket { level, at: now });
            }
            if let Some(level) = token_level {
                state.tokens = Some(Bucket { level, at: now });
            }
            if subject.limits.max_concurrent.is_some() {
                state.in_flight += 1;
            }
        }
        let headers = headers(&map, subjects, now);
        Outcome::Admitted(
            Grant {
                backend: Backend::Local,
                lease,
                subjects: subjects.to_vec(),
                tokens,
            },
            headers,
        )
    }

    pub fn release(&self, grant: &Grant, used: u64, refund_request: bool) {
        let now = self.now();
        let mut map = self.lock();
        for subject in &grant.subjects {
            let Some(state) = map.get_mut(&(subject.kind, subject.id)) else {
                continue;
            };
            let (request_rate, token_rate) = rates(subject);
            if let (Some(rate), Some(bucket)) = (token_rate, state.tokens.as_mut()) {
                if grant.tokens > 0 {
                    bucket.refund(rate, now, grant.tokens as f64 - used as f64);
                }
            }
            if let (true, Some(rate), Some(bucket)) =
                (refund_request, request_rate, state.requests.as_mut())
            {
                bucket.refund(rate, now, 1.0);
            }
            if subject.limits.max_concurrent.is_some() {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }

    pub fn peek(&self, subjects: &[Subject]) -> RateHeaders {
        let now = self.now();
        headers(&self.lock(), subjects, now)
    }
}

fn headers(
    map: &HashMap<(SubjectKind, i64), State>,
    subjects: &[Subject],
    now: Micros,
) -> RateHeaders {
    let mut out = RateHeaders::default();
    for subject in subjects {
        let state = map.get(&(subject.kind, subject.id));
        let (request_rate, token_rate) = rates(subject);
        let status = |rate: Rate, bucket: Option<&Bucket>| {
            bucket
                .copied()
                .unwrap_or(Bucket::full(rate, now))
                .status(rate, now)
        };
        out.add(
            request_rate.map(|r| status(r, state.and_then(|s| s.requests.as_ref()))),
            token_rate.map(|r| status(r, state.and_then(|s| s.tokens.as_ref()))),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiaas_admin::limits::Limits;

    fn subject(kind: SubjectKind, limits: Limits) -> Subject {
        Subject {
            kind,
            id: 1,
            limits,
        }
    }

    #[test]
    fn a_tenant_refusal_charges_the_key_nothing() {
        let local = Local::new();
        let key = subject(
            SubjectKind::Key,
            Limits {
                rpm: Some(10),
                ..Default::default()
            },
        );
        let tenant = subject(
            SubjectKind::Tenant,
            Limits {
                rpm: Some(1),
                ..Default::default()
            },
        );
        assert!(matches!(
            local.acquire(&[key, tenant], 0, "a".into()),
            Outcome::Admitted(..)
        ));
        match local.acquire(&[key, tenant], 0, "b".into()) {
            Outcome::Refused(r, headers) => {
                assert_eq!(r.kind, SubjectKind::Tenant);
                assert_eq!(r.dimension, Dimension::Requests);
                // The stricter subject (the tenant) is what the headers show.
                assert_eq!(headers.requests.unwrap().limit, 1);
            }
            Outcome::Admitted(..) => panic!("the tenant allows one request"),
        }
        // The key alone still has 9 of 10 left: the refused request took nothing from it.
        let headers = local.peek(&[key]);
        assert_eq!(headers.requests.unwrap().remaining, 9);
    }

    #[test]
    fn concurrency_slots_come_back_on_release_and_unused_tokens_too() {
        let local = Local::new();
        let key = subject(
            SubjectKind::Key,
            Limits {
                tpm: Some(1000),
                max_concurrent: Some(1),
                ..Default::default()
            },
        );
        let Outcome::Admitted(grant, headers) = local.acquire(&[key], 600, "a".into()) else {
            panic!("first request fits");
        };
        assert_eq!(headers.tokens.unwrap().remaining, 400);
        match local.acquire(&[key], 1, "b".into()) {
            Outcome::Refused(r, _) => assert_eq!(r.dimension, Dimension::Concurrency),
            Outcome::Admitted(..) => panic!("one at a time"),
        }
        local.release(&grant, 100, false);
        let tokens = local.peek(&[key]).tokens.unwrap();
        assert!((900..=901).contains(&tokens.remaining), "{tokens:?}");
        assert!(matches!(
            local.acquire(&[key], 1, "c".into()),
            Outcome::Admitted(..)
        ));
        match local.acquire(&[key], 5000, "d".into()) {
            Outcome::Refused(r, _) => {
                assert!(matches!(
                    r.dimension,
                    Dimension::TooLarge | Dimension::Concurrency
                ))
            }
            Outcome::Admitted(..) => panic!("too large"),
        }
    }
}
