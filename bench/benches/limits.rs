//! Cost of admission on the hot path: the in-process limiter (a key and its tenant, requests +
//! tokens + concurrency, acquire then release) over 10,000 keys; the same through Redis (one
//! script round trip each way) when one answers at `AIAAS_BENCH_REDIS` (default
//! `redis://127.0.0.1:6379/15`); and a budget reservation + settlement in the database (SQLite
//! file, and PostgreSQL when `TEST_DATABASE_URL` is set).
//!
//! `cargo bench -p aiaas-bench --bench limits`

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aiaas_admin::audit::Actor;
use aiaas_admin::budgets::{self, Period};
use aiaas_admin::limits::Limits;
use aiaas_admin::policy::{Policies, PolicySettings};
use aiaas_admin::{keys, tenants, Scope};
use aiaas_server::limits::{Limiter, LimiterMode, Outcome, RedisSettings, Subject, SubjectKind};
use criterion::{criterion_group, criterion_main, Criterion};

const KEYS: usize = 10_000;

fn subjects(i: usize) -> [Subject; 2] {
    let generous = Limits {
        rpm: Some(1_000_000_000),
        rpm_burst: None,
        tpm: Some(1_000_000_000_000),
        tpm_burst: None,
        max_concurrent: Some(1_000_000),
    };
    [
        Subject {
            kind: SubjectKind::Key,
            id: i as i64,
            limits: generous,
        },
        Subject {
            kind: SubjectKind::Tenant,
            id: (i % 100) as i64,
            limits: generous,
        },
    ]
}

async fn admit_and_release(limiter: &Limiter, subjects: &[Subject]) {
    match limiter.acquire(subjects, 500).await {
        Outcome::Admitted(grant, headers) => {
            black_box(headers);
            limiter.release(&grant, 120, false).await;
        }
        Outcome::Refused(..) => panic!("generous limits refused"),
    }
}

fn limiter(c: &mut Criterion) {
    let all: Vec<[Subject; 2]> = (0..KEYS).map(subjects).collect();
    let next = AtomicUsize::new(0);
    let local = Limiter::new(None).expect("limiter");
    c.bench_function("limits/local acquire+release (key+tenant, 10k keys)", |b| {
        b.iter(|| {
            let s = &all[next.fetch_add(7919, Ordering::Relaxed) % KEYS];
            futures::executor::block_on(admit_and_release(&local, s));
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url =
        std::env::var("AIAAS_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/15".into());
    let settings = RedisSettings {
        url: url.clone(),
        prefix: format!("aiaas-bench-{}", uuid::Uuid::new_v4().simple()),
        timeout: Duration::from_millis(250),
        lease: Duration::from_secs(60),
    };
    // The Redis connection lives on the runtime it is created in.
    let redis = rt
        .block_on(async { Limiter::new(Some(settings)) })
        .expect("redis limiter");
    rt.block_on(admit_and_release(&redis, &all[0]));
    if redis.mode() != LimiterMode::Redis {
        eprintln!("no Redis at {url}: skipping the shared-limiter bench");
        return;
    }
    c.bench_function("limits/redis acquire+release (key+tenant, 10k keys)", |b| {
        b.iter(|| {
            let s = &all[next.fetch_add(7919, Ordering::Relaxed) % KEYS];
            rt.block_on(admit_and_release(&redis, s));
        })
    });
}

async fn policies_on(url: &str) -> (Policies, Vec<budgets::Budget>) {
    let settings = aiaas_admin::db::DatabaseSettings {
        url: url.to_string(),
        ..Default::default()
    };
    let db = aiaas_admin::db::connect(&settings).await.expect("db");
    aiaas_admin::db::migrate(&db).await.expect("migrate");
    let actor = Actor::cli();
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let tenant = tenants::insert_tenant(&db, &name, &actor)
        .await
        .expect("tenant");
    let key = keys::insert_key(
        &db,
        keys::NewKey {
            tenant_id: tenant.id,
            ..Default::default()
        },
        &actor,
    )
    .await
    .expect("key");
    budgets::set_budget(
        &db,
        Scope::Platform,
        tenant.id,
        None,
        budgets::Cap::tokens(i64::MAX / 4),
        Period::Monthly,
        &actor,
    )
    .await
    .expect("budget");
    let policies = Policies::start(
        db,
        PolicySettings {
            refresh_interval: Duration::from_secs(3600),
            reservation_ttl: Duration::from_secs(3600),
        },
    )
    .await
    .expect("policies");
    let list = policies.budgets_for(tenant.id, Some(key.key.id));
    assert_eq!(list.len(), 1);
    (policies, list)
}

fn budget(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut targets = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    if let Ok(admin) = std::env::var("TEST_DATABASE_URL") {
        // A database of its own, so the bench never touches the one it was pointed at.
        let name = format!("aiaas_bench_{}", uuid::Uuid::new_v4().simple());
        rt.block_on(async {
            use sea_orm::ConnectionTrait;
            let conn = sea_orm::Database::connect(admin.as_str())
                .await
                .expect("TEST_DATABASE_URL");
            conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create bench database");
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        targets.push(("postgres", format!("{base}/{name}")));
    }
    for (name, url) in targets {
        let (policies, list) = rt.block_on(policies_on(&url));
        c.bench_function(&format!("budget/{name} reserve+settle"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let held = policies
                        .reserve(&list, |_| 500)
                        .await
                        .expect("db")
                        .expect("room");
                    policies.settle(&held, |_| 120).await.expect("settle");
                })
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = limiter, budget
}
criterion_main!(benches);
