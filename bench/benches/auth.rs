//! Cost of authentication on the hot path (cache hit): an API key, a token minted by aiaas for a
//! key, and a tenant-signed RS256 / HS256 token, verified from the in-memory cache; plus a JWT
//! whose signature has not been seen before (the price of the first request with a new token).
//! Runs on a real SQLite database migrated by the real `Migrator`.
//!
//! `cargo bench -p aiaas-bench --bench auth`

use std::hint::black_box;

use aiaas_admin::audit::Actor;
use aiaas_admin::auth::{AuthSettings, Authenticator};
use aiaas_admin::{jwt_keys, keys, tenants, Scope};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;

const HS256_SECRET: &str = "bench-tenant-shared-secret-of-32-bytes-or-more";

struct Fixture {
    auth: Authenticator,
    api_key: String,
    minted: String,
    rs256_kid: String,
    rs256: EncodingKey,
    hs256_kid: String,
    _dir: tempfile::TempDir,
}

fn pem(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/jwt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sign(alg: Algorithm, kid: &str, sub: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    let claims = serde_json::json!({"exp": chrono::Utc::now().timestamp() + 3600, "sub": sub});
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = aiaas_admin::db::DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        ..Default::default()
    };
    let db = aiaas_admin::db::connect(&settings).await.expect("db");
    aiaas_admin::db::migrate(&db).await.expect("migrate");
    let actor = Actor::cli();
    let tenant = tenants::insert_tenant(&db, "bench", &actor)
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
    let api_key = key.secret.expose_secret().to_string();
    let minted = jwt_keys::mint_key_token(
        &db,
        Scope::Platform,
        &key.key.public_id,
        chrono::Duration::hours(1),
        Some("user".into()),
        None,
    )
    .await
    .expect("mint");
    let rs = jwt_keys::insert_jwt_key(
        &db,
        jwt_keys::NewJwtKey {
            tenant_id: tenant.id,
            name: None,
            algorithm: "RS256".into(),
            secret: None,
            public_key: Some(pem("rs256-public.pem")),
            issuer: None,
            audience: None,
        },
        &actor,
    )
    .await
    .expect("rs256 key");
    let hs = jwt_keys::insert_jwt_key(
        &db,
        jwt_keys::NewJwtKey {
            tenant_id: tenant.id,
            name: None,
            algorithm: "HS256".into(),
            secret: Some(HS256_SECRET.to_string().into()),
            public_key: None,
            issuer: None,
            audience: None,
        },
        &actor,
    )
    .await
    .expect("hs256 key");
    let auth = Authenticator::start(db, AuthSettings::default())
        .await
        .expect("authenticator");
    Fixture {
        auth,
        api_key,
        minted,
        rs256_kid: rs.kid,
        rs256: EncodingKey::from_rsa_pem(pem("rs256-private.pem").as_bytes()).expect("rsa pem"),
        hs256_kid: hs.kid,
        _dir: dir,
    }
}

fn hot(auth: &Authenticator, credential: &str) {
    let caller = auth
        .authenticate_hot(black_box(credential))
        .expect("decided from the cache")
        .expect("accepted");
    black_box(caller);
}

fn bench_auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let f = runtime.block_on(fixture());
    let _guard = runtime.enter();
    let rs256_token = sign(Algorithm::RS256, &f.rs256_kid, "user", &f.rs256);
    let hs256 = EncodingKey::from_secret(HS256_SECRET.as_bytes());
    let hs256_token = sign(Algorithm::HS256, &f.hs256_kid, "user", &hs256);
    for token in [&f.api_key, &f.minted, &rs256_token, &hs256_token] {
        hot(&f.auth, token); // warm the caches
    }

    let mut group = c.benchmark_group("auth/cache_hit");
    group.bench_function("api_key", |b| b.iter(|| hot(&f.auth, &f.api_key)));
    group.bench_function("minted_jwt", |b| b.iter(|| hot(&f.auth, &f.minted)));
    group.bench_function("tenant_rs256_jwt", |b| {
        b.iter(|| hot(&f.auth, &rs256_token))
    });
    group.bench_function("tenant_hs256_jwt", |b| {
        b.iter(|| hot(&f.auth, &hs256_token))
    });
    group.finish();

    let mut group = c.benchmark_group("auth/new_token");
    let mut n = 0u64;
    group.bench_function("tenant_hs256_jwt", |b| {
        b.iter_batched(
            || {
                n += 1;
                sign(Algorithm::HS256, &f.hs256_kid, &format!("u{n}"), &hs256)
            },
            |token| hot(&f.auth, &token),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("tenant_rs256_jwt", |b| {
        b.iter_batched(
            || {
                n += 1;
                sign(Algorithm::RS256, &f.rs256_kid, &format!("u{n}"), &f.rs256)
            },
            |token| hot(&f.auth, &token),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
