//! Console page render times (server time: the handler, its queries and the template, measured
//! in process) with 1,000,000 usage events and 10,000 keys in one tenant, on SQLite (and on
//! PostgreSQL when `TEST_DATABASE_URL` is set). Prints p50 / p95 / max per page.
//!
//! `cargo bench -p aiaas-bench --bench console` (see bench/README.md for the faster dev-profile form)

use std::time::{Duration, Instant};

use actix_web::{test, web, App};
use aiaas_admin::audit::Actor;
use aiaas_admin::console::{Console, ConsoleSettings};
use aiaas_admin::ledger::{write_batch, UsageEvent};
use aiaas_admin::sessions::{self, Origin, SignIn};
use aiaas_admin::users::{NewUser, Role};
use sea_orm::{EntityTrait, Set};
use secrecy::{ExposeSecret, SecretString};

const KEYS: i64 = 10_000;
const EVENTS: i64 = 1_000_000;
const SAMPLES: usize = 40;

async fn database(url: &str) -> sea_orm::DatabaseConnection {
    let settings = aiaas_admin::db::DatabaseSettings {
        url: url.to_string(),
        ..Default::default()
    };
    let db = aiaas_admin::db::connect(&settings).await.expect("db");
    aiaas_admin::db::migrate(&db).await.expect("migrate");
    db
}

/// One tenant with 10,000 keys and 1,000,000 events over the last 30 days. Traffic is skewed
/// as real traffic is: key `k` gets a share proportional to 1/(k+1) (Zipf), 200 end users,
/// 3 models, 2 endpoints, 1% errors.
async fn fill(db: &sea_orm::DatabaseConnection) -> (i64, String) {
    let tenant = aiaas_admin::tenants::insert_tenant(db, "bench", &Actor::cli())
        .await
        .expect("tenant");
    let now = chrono::Utc::now();
    let mut key_ids = Vec::with_capacity(KEYS as usize);
    let mut rows = Vec::new();
    for k in 0..KEYS {
        rows.push(aiaas_admin::entity::api_key::ActiveModel {
            public_id: Set(format!("bench{k:07}")),
            secret_hash: Set("00".repeat(32)),
            prefix: Set(format!("sk-aiaas-bench{k:07}-abcd…")),
            name: Set(format!("service {k}")),
            tenant_id: Set(tenant.id),
            created_at: Set(now - chrono::Duration::minutes(k)),
            updated_at: Set(now),
            ..Default::default()
        });
        if rows.len() == 500 {
            aiaas_admin::entity::api_key::Entity::insert_many(std::mem::take(&mut rows))
                .exec(db)
                .await
                .expect("keys");
        }
    }
    let first = aiaas_admin::keys::find_key(db, "bench0000000")
        .await
        .expect("key")
        .expect("key");
    for k in 0..KEYS {
        key_ids.push(first.id + k);
    }
    // Zipf weights over keys, as a cumulative table.
    let weights: Vec<f64> = (0..KEYS).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    let start = now - chrono::Duration::days(30);
    let step = 30.0 * 86_400.0 / EVENTS as f64;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let started = Instant::now();
    for batch in 0..(EVENTS / 1000) {
        let events: Vec<UsageEvent> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                let r = (next() % 1_000_000) as f64 / 1_000_000.0;
                let key = cumulative
                    .partition_point(|c| *c < r)
                    .min(KEYS as usize - 1);
                let at = start + chrono::Duration::milliseconds((n as f64 * step * 1000.0) as i64);
                let roll = next();
                UsageEvent {
                    request_id: format!("req_console_bench_{n}"),
                    tenant_id: Some(tenant.id),
                    key_id: Some(key_ids[key]),
                    end_user: Some(format!("user-{}", roll % 200)),
                    model: ["small", "medium", "large"][(roll % 3) as usize].into(),
                    endpoint: if roll % 10 == 0 {
                        "/v1/embeddings"
                    } else {
                        "/v1/chat/completions"
                    }
                    .into(),
                    prompt_tokens: 50 + (roll % 500) as i64,
                    completion_tokens: (roll % 300) as i64,
                    cached_tokens: None,
                    status: if roll % 100 == 0 { "error" } else { "ok" }.into(),
                    http_status: 200,
                    stream: roll % 2 == 0,
                    started_at: at,
                    first_token_at: Some(at),
                    finished_at: at,
                }
            })
            .collect();
        write_batch(db, &events, &[]).await.expect("write");
    }
    eprintln!(
        "  wrote {EVENTS} events for {KEYS} keys in {:?}",
        started.elapsed()
    );
    let email = "admin@bench.example".to_string();
    aiaas_admin::users::insert_user(
        db,
        NewUser {
            email: email.clone(),
            password: SecretString::from("bench password 123"),
            role: Role::TenantAdmin,
            tenant_id: Some(tenant.id),
        },
        &Actor::cli(),
    )
    .await
    .expect("user");
    (tenant.id, email)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(label: &str, url: &str) {
    eprintln!("{label}:");
    let db = database(url).await;
    let (_, email) = fill(&db).await;
    if url.starts_with("postgres") {
        // What autovacuum does after a bulk load (statistics, and the visibility map that
        // index-only scans need); SQLite is measured without statistics.
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("VACUUM ANALYZE usage_rollups")
            .await
            .expect("analyze");
    }
    let SignIn::Ok { token, .. } = sessions::sign_in(
        &db,
        &email,
        &SecretString::from("bench password 123"),
        &Origin::default(),
        chrono::Duration::hours(1),
    )
    .await
    .expect("sign in") else {
        panic!("sign-in refused")
    };
    let console = web::Data::new(Console::new(
        db.clone(),
        ConsoleSettings::default(),
        "usd".into(),
        vec![],
    ));
    let app = test::init_service(
        App::new()
            .app_data(console)
            .configure(aiaas_admin::console::configure),
    )
    .await;
    let cookie = format!("aiaas_session={}", token.expose_secret());
    let today = chrono::Utc::now().date_naive();
    let month_ago = today - chrono::Duration::days(29);
    let pages = [
        ("dashboard 24h", "/admin/dashboard".to_string()),
        ("dashboard 30d", "/admin/dashboard?range=30d".to_string()),
        ("keys list (page 1)", "/admin/keys".to_string()),
        ("keys list (page 200)", "/admin/keys?page=200".to_string()),
        ("keys search", "/admin/keys?q=service%2099".to_string()),
        (
            "usage by day, 30 days",
            format!("/admin/usage?from={month_ago}&to={today}&group=day"),
        ),
        (
            "usage by model, 30 days",
            format!("/admin/usage?from={month_ago}&to={today}&group=model"),
        ),
        (
            "usage by key, 30 days",
            format!("/admin/usage?from={month_ago}&to={today}&group=key"),
        ),
        (
            "usage by user, one key",
            format!("/admin/usage?from={month_ago}&to={today}&group=user&key=bench0000003"),
        ),
    ];
    for (name, path) in pages {
        let mut times = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 3 {
            let req = test::TestRequest::get()
                .uri(&path)
                .insert_header(("cookie", cookie.clone()))
                .to_request();
            let started = Instant::now();
            let res = test::call_service(&app, req).await;
            let status = res.status();
            let _ = test::read_body(res).await;
            let took = started.elapsed();
            assert!(status.is_success(), "{path}: {status}");
            if i >= 3 {
                times.push(took);
            }
        }
        times.sort();
        eprintln!(
            "  {name:<28} p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}

#[actix_web::main]
async fn main() {
    let keep = std::env::var_os("AIAAS_BENCH_KEEP_DB").is_some();
    // `AIAAS_BENCH_ONLY=sqlite` or `=postgres` runs one backend.
    let only = std::env::var("AIAAS_BENCH_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    if only != "postgres" {
        let path = dir.path().join("console.db");
        run("SQLite (WAL)", &format!("sqlite://{}", path.display())).await;
        if keep {
            let kept =
                std::env::temp_dir().join(format!("aiaas_console_bench_{}.db", std::process::id()));
            std::fs::copy(&path, &kept).expect("keep the SQLite database");
            // What the write-ahead log still holds goes with it.
            let wal = path.with_extension("db-wal");
            if wal.exists() {
                std::fs::copy(&wal, kept.with_extension("db-wal")).expect("keep its WAL");
            }
            eprintln!("kept sqlite://{}", kept.display());
        }
    }
    if only == "sqlite" {
        return;
    }
    if let Ok(base) = std::env::var("TEST_DATABASE_URL") {
        let name = format!("aiaas_console_bench_{}", std::process::id());
        let admin = database_admin(&base).await;
        use sea_orm::ConnectionTrait;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => base.clone(),
        };
        run("PostgreSQL", &url).await;
        if keep {
            // For looking at query plans on the same data afterwards.
            eprintln!("kept {url}");
        } else {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await;
        }
    }
}

async fn database_admin(url: &str) -> sea_orm::DatabaseConnection {
    sea_orm::Database::connect(url).await.expect("connect")
}
