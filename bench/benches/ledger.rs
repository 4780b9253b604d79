//! The usage ledger: what recording costs the request path (one journal append), and how many
//! events a second the writer puts into SQLite (WAL) and PostgreSQL (`TEST_DATABASE_URL`, on a
//! fresh database of its own), 1,000 events per transaction with their rollups.
//!
//! `cargo bench -p aiaas-bench --bench ledger` (see bench/README.md for the faster dev-profile form)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aiaas_admin::ledger::{write_batch, Ledger, LedgerSettings, UsageEvent};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// An event; `spread` keys (and 1/10 as many tenants) and 20 users / 3 models share the load.
fn event_in(spread: u64) -> UsageEvent {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = chrono::Utc::now();
    UsageEvent {
        request_id: format!("req_bench_{}_{n}", std::process::id()),
        tenant_id: Some((n % spread.div_ceil(10)) as i64),
        key_id: Some((n % spread) as i64),
        end_user: Some(format!("user-{}", n % 20)),
        model: ["a", "b", "c"][(n % 3) as usize].into(),
        endpoint: "/v1/chat/completions".into(),
        prompt_tokens: 100 + (n % 100) as i64,
        completion_tokens: (n % 300) as i64,
        cached_tokens: None,
        status: "ok".into(),
        http_status: 200,
        stream: n.is_multiple_of(2),
        started_at: now,
        first_token_at: Some(now),
        finished_at: now,
    }
}

fn event() -> UsageEvent {
    event_in(500)
}

async fn database(url: &str) -> sea_orm::DatabaseConnection {
    let settings = aiaas_admin::db::DatabaseSettings {
        url: url.to_string(),
        ..Default::default()
    };
    let db = aiaas_admin::db::connect(&settings).await.expect("db");
    aiaas_admin::db::migrate(&db).await.expect("migrate");
    db
}

fn ledger(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    // The request path: append to the journal (the writer is idle while this runs).
    let url = format!("sqlite://{}", dir.path().join("record.db").display());
    let recorder = rt.block_on(async {
        let db = database(&url).await;
        Ledger::start(
            db,
            LedgerSettings {
                journal_dir: dir.path().join("journal"),
                ..Default::default()
            },
        )
        .expect("ledger")
    });
    let one = event();
    c.bench_function("ledger/record (journal append)", |b| {
        b.iter(|| recorder.record(&one))
    });

    let mut targets = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("write.db").display()),
    )];
    if let Ok(admin) = std::env::var("TEST_DATABASE_URL") {
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
    let mut group = c.benchmark_group("ledger/write 1000 events");
    group.throughput(Throughput::Elements(1000));
    for (name, url) in targets {
        let db = rt.block_on(database(&url));
        // 500 keys: ~1,000 rollup groups per batch (worst case); 10 keys: ~60.
        for spread in [500u64, 10] {
            group.bench_function(format!("{name}, {spread} keys"), |b| {
                b.iter_batched(
                    || (0..1000).map(|_| event_in(spread)).collect::<Vec<_>>(),
                    |batch| {
                        rt.block_on(write_batch(&db, &batch, &[]))
                            .expect("write batch")
                    },
                    criterion::BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

/// Console-style queries over a ledger of 1,000,000 events spread over 30 days (50 tenants,
/// 500 keys, 3 models): a tenant's month by day and model (usage API), and the finance export
/// of the month by day, tenant, key and model. Both read the daily rollups.
fn queries(c: &mut Criterion) {
    use aiaas_admin::usage::{self, ExportQuery, GroupBy};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("million.db").display());
    let db = rt.block_on(database(&url));
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    let started = std::time::Instant::now();
    rt.block_on(async {
        for batch in 0..1000 {
            let events: Vec<UsageEvent> = (0..1000)
                .map(|i| {
                    let mut e = event();
                    let at = start + chrono::Duration::seconds((batch * 1000 + i) * 2);
                    e.started_at = at;
                    e.first_token_at = Some(at);
                    e.finished_at = at;
                    e
                })
                .collect();
            write_batch(&db, &events, &[]).await.expect("write");
        }
    });
    eprintln!("wrote 1,000,000 events in {:?}", started.elapsed());
    let from = {
        let s = start.timestamp();
        chrono::DateTime::from_timestamp(s - s.rem_euclid(86_400), 0).expect("time")
    };
    let to = from + chrono::Duration::days(31);
    c.bench_function(
        "ledger/usage API: one tenant, 31 days by day and model (1M events)",
        |b| {
            b.iter(|| {
                rt.block_on(usage::buckets(
                    &db,
                    7,
                    from,
                    to,
                    86_400,
                    &["/v1/chat/completions"],
                    &[GroupBy::Model],
                ))
                .expect("query")
            })
        },
    );
    let query = ExportQuery {
        from,
        to,
        tenant_id: None,
        group_by: vec![GroupBy::Day, GroupBy::Tenant, GroupBy::Key, GroupBy::Model],
        filters: Default::default(),
    };
    c.bench_function(
        "ledger/export: 31 days by day, tenant, key, model (1M events)",
        |b| b.iter(|| rt.block_on(usage::export(&db, &query)).expect("export")),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = ledger, queries
}
criterion_main!(benches);
