//! Tenants, API keys and JWTs, end to end: the real server on SQLite and (with
//! `TEST_DATABASE_URL`) on PostgreSQL, each test on a fresh database built by the real `Migrator`.

use std::time::{Duration, Instant};

use aiaas_admin::audit::Actor;
use aiaas_admin::entity::{api_key, audit_log, jwt_key};
use aiaas_admin::{jwt_keys, keys, tenants, Scope};
use aiaas_tests::*;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

fn hello(model: &str) -> Value {
    super::chat(model, json!({"max_tokens": 1}))
}

/// A server with the tiny chat models on a fresh database of kind `db`.
async fn server_on(db: TestDb) -> (TestApp, aiaas_server::Application) {
    let models = standard_models()
        .into_iter()
        .filter(|m| m.id == CHAT || m.id == LLAMA)
        .collect();
    spawn_custom(test_config_on(models, &db.fresh_url())).await
}

/// A new tenant with one key (optionally limited to `models`); returns the tenant id and the key.
async fn tenant_with_key(db: &DatabaseConnection, models: Option<&[&str]>) -> (i64, String) {
    let name = format!("t-{}", uuid::Uuid::new_v4().simple());
    let tenant = tenants::insert_tenant(db, &name, &Actor::cli())
        .await
        .unwrap();
    let key = keys::insert_key(
        db,
        keys::NewKey {
            tenant_id: tenant.id,
            name: Some("test".into()),
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        },
        &Actor::cli(),
    )
    .await
    .unwrap();
    (tenant.id, key.secret.expose_secret().to_string())
}

fn public_id(key: &str) -> &str {
    keys::parse_key(key).unwrap().public_id
}

async fn status_of(app: &TestApp, key: Option<&str>) -> u16 {
    app.with_key(key)
        .post("/v1/chat/completions", &hello(CHAT))
        .await
        .status()
        .as_u16()
}

/// Poll until `check` holds; returns how long it took. Fails after `deadline`.
pub(super) async fn within<F, Fut>(deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------- schema ----------

#[tokio::test]
async fn migrations_apply_and_roll_back_on_every_backend() {
    use aiaas_migrations::{Migrator, MigratorTrait};
    for db in TestDb::all() {
        let (_, conn) = fresh_migrated(db).await;
        assert!(Migrator::get_pending_migrations(&conn)
            .await
            .unwrap()
            .is_empty());
        tenants::insert_tenant(&conn, "acme", &Actor::cli())
            .await
            .unwrap();
        Migrator::down(&conn, None).await.unwrap();
        assert!(
            tenants::list_tenants(&conn).await.is_err(),
            "{db:?}: tables remain after down"
        );
        Migrator::up(&conn, None).await.unwrap();
        assert!(
            tenants::list_tenants(&conn).await.unwrap().is_empty(),
            "{db:?}"
        );
    }
}

#[tokio::test]
async fn replicas_migrating_one_database_at_once_all_succeed() {
    use aiaas_migrations::{Migrator, MigratorTrait};
    for db in TestDb::all().into_iter().filter(|d| *d == TestDb::Postgres) {
        let url = db.fresh_url();
        let mut replicas = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            replicas.push(tokio::spawn(async move {
                let conn = connect(&url).await;
                aiaas_admin::db::migrate(&conn).await
            }));
        }
        for replica in replicas {
            replica.await.unwrap().unwrap();
        }
        let conn = connect(&url).await;
        assert!(Migrator::get_pending_migrations(&conn)
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn first_start_creates_the_default_tenant_and_one_working_key() {
    for db in TestDb::all() {
        let url = db.fresh_url();
        let config = test_config_on(vec![standard_models().remove(0)], &url);
        let (app, _server) = spawn_custom(config.clone()).await;
        let key = app.key.clone().expect("first start prints a key");
        assert!(key.starts_with("sk-aiaas-"), "{key}");
        assert_eq!(status_of(&app, Some(&key)).await, 200, "{db:?}");
        let conn = app.db().await;
        let all = tenants::list_tenants(&conn).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "default");
        let actions: Vec<String> = audit_log::Entity::find()
            .order_by_asc(audit_log::Column::Id)
            .all(&conn)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(actions, ["tenant.create", "key.create"], "{db:?}");
        // A second start on the same database creates nothing.
        let (again, _second) = spawn_custom(config).await;
        assert!(again.key.is_none(), "{db:?}");
        assert_eq!(tenants::list_tenants(&conn).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn keys_are_stored_as_a_public_id_and_a_sha256_only() {
    for db in TestDb::all() {
        let (_, conn) = fresh_migrated(db).await;
        let (_, key) = tenant_with_key(&conn, None).await;
        let parsed = keys::parse_key(&key).unwrap();
        let row = keys::find_key(&conn, parsed.public_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.secret_hash,
            keys::hex(&keys::hash_secret(parsed.secret))
        );
        assert!(key.starts_with(row.prefix.trim_end_matches('…')));
        let stored = format!("{row:?}");
        assert!(
            !stored.contains(parsed.secret),
            "{db:?}: the secret is stored: {stored}"
        );
        // 32 random bytes, URL-safe.
        assert_eq!(parsed.secret.len(), 43);
    }
}

// ---------- refusals ----------

#[tokio::test]
async fn every_v1_route_refuses_a_request_without_a_credential() {
    let app = spawn_app().with_key(None);
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    for (method, path) in [
        (get.clone(), "/v1/models"),
        (get.clone(), &format!("/v1/models/{CHAT}")),
        (post.clone(), "/v1/chat/completions"),
        (post.clone(), "/v1/completions"),
        (post.clone(), "/v1/embeddings"),
        (post.clone(), "/tokenize"),
        (post.clone(), "/detokenize"),
    ] {
        let res = app
            .request(method.clone(), path)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key", "{method} {path}");
    }
    for path in ["/health", "/ready", "/metrics"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 200, "{path} needs no credential");
    }
}

#[tokio::test]
async fn bad_credentials_are_refused_alike_without_saying_why() {
    let app = spawn_app();
    let real = app.key.clone().unwrap();
    let parsed = keys::parse_key(&real).unwrap();
    let wrong_secret = format!("sk-aiaas-{}-{}", parsed.public_id, "A".repeat(43));
    let unknown = format!("sk-aiaas-{}-{}", "a".repeat(12), parsed.secret);
    let mut bodies = Vec::new();
    for key in [
        wrong_secret.as_str(),
        unknown.as_str(),
        "sk-aiaas-short",
        "sk-proj-0123456789",
        "not.a.jwt",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
    ] {
        let res = app
            .with_key(Some(key))
            .post("/v1/chat/completions", &hello(CHAT))
            .await;
        assert_eq!(res.status(), 401, "{key}");
        bodies.push(res.json::<Value>().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    // A scheme other than Bearer is the same as no credential.
    let basic = app
        .with_key(None)
        .request(reqwest::Method::GET, "/v1/models")
        .header("authorization", format!("Basic {real}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let missing: Value = basic.json().await.unwrap();
    // The reason is counted for operators, never told to the client.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for reason in [
        "wrong secret",
        "unknown key",
        "malformed key",
        "missing credential",
    ] {
        assert!(
            metrics.contains(&format!("aiaas_auth_refusals_total{{reason=\"{reason}\"}}")),
            "{reason} not counted"
        );
    }
    insta::assert_json_snapshot!(
        "auth_refusals",
        json!({"bad_key": bodies[0], "no_key": missing})
    );
}

// ---------- allowlists and tenants ----------

#[tokio::test]
async fn a_key_model_allowlist_filters_models_and_refuses_others_with_403() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (_, key) = tenant_with_key(&conn, Some(&[CHAT])).await;
        let limited = app.with_key(Some(&key));
        let (_, list) = limited.get_json("/v1/models").await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [CHAT], "{db:?}");
        let (status, _) = limited.get_json(&format!("/v1/models/{LLAMA}")).await;
        assert_eq!(status, 404);
        assert_eq!(
            limited
                .post("/v1/chat/completions", &hello(CHAT))
                .await
                .status(),
            200
        );
        let (status, body) = limited
            .post_json("/v1/chat/completions", &hello(LLAMA))
            .await;
        assert_eq!(status, 403, "{db:?} {body}");
        assert_eq!(body["error"]["code"], "model_not_allowed");
        assert_eq!(body["error"]["param"], "model");
        let (status, _) = limited
            .post_json(
                "/v1/completions",
                &json!({"model": LLAMA, "prompt": "x", "max_tokens": 1}),
            )
            .await;
        assert_eq!(status, 403);
        // The unrestricted first key sees both.
        let (_, all) = app.get_json("/v1/models").await;
        assert_eq!(all["data"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn one_tenant_can_never_see_use_or_revoke_another_tenants_objects() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (a, key_a) = tenant_with_key(&conn, None).await;
        let (b, key_b) = tenant_with_key(&conn, None).await;
        let as_a = Scope::Tenant(a);
        // Listing is per tenant.
        let listed: Vec<String> = keys::list_keys(&conn, a)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.public_id)
            .collect();
        assert_eq!(listed, [public_id(&key_a)]);
        // B's key is not found from A's scope, whatever A tries.
        let err = keys::revoke_key(&conn, as_a, public_id(&key_b), &Actor::cli())
            .await
            .unwrap_err();
        assert!(
            matches!(err, aiaas_admin::AdminError::NotFound(_)),
            "{err:?}"
        );
        assert!(keys::find_key_in_scope(&conn, as_a, public_id(&key_b))
            .await
            .is_err());
        assert!(jwt_keys::mint_key_token(
            &conn,
            as_a,
            public_id(&key_b),
            chrono::Duration::hours(1),
            None,
            None
        )
        .await
        .is_err());
        let b_jwt = jwt_keys::insert_jwt_key(&conn, hs256_key(b, None, None), &Actor::cli())
            .await
            .unwrap();
        assert!(
            jwt_keys::set_jwt_key_enabled(&conn, as_a, &b_jwt.kid, false, &Actor::cli())
                .await
                .is_err()
        );
        assert!(
            jwt_keys::find_jwt_key(&conn, &b_jwt.kid)
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
        // Nothing of B changed, and B's key still works.
        assert_eq!(status_of(&app, Some(&key_b)).await, 200, "{db:?}");
        assert!(keys::find_key(&conn, public_id(&key_b))
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none());
        // A token signed with B's key (a key A does not own) identifies B, never A: a tenant
        // cannot mint for another tenant's key by naming it.
        let forged = sign(
            Algorithm::HS256,
            Some(&b_jwt.kid),
            json!({"exp": Utc::now().timestamp() + 600, "aiaas_key": public_id(&key_a)}),
            &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        );
        let auth = aiaas_admin::auth::Authenticator::start(conn.clone(), Default::default())
            .await
            .unwrap();
        let caller = auth.authenticate(&forged).await.unwrap();
        assert_eq!((caller.tenant_id, caller.key_id), (b, None));
        // The owner can revoke its own key.
        keys::revoke_key(&conn, as_a, public_id(&key_a), &Actor::cli())
            .await
            .unwrap();
    }
}

// ---------- revocation ----------

#[tokio::test]
async fn a_revoked_key_is_refused_within_a_second_under_load() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (_, key) = tenant_with_key(&conn, None).await;
        let caller = app.with_key(Some(&key));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (caller, stop) = (caller.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = caller.get("/v1/models").await;
                    statuses.push(res.status().as_u16());
                }
                statuses
            }));
        }
        within(Duration::from_secs(10), || async {
            status_of(&app, Some(&key)).await == 200
        })
        .await;
        keys::revoke_key(&conn, Scope::Platform, public_id(&key), &Actor::cli())
            .await
            .unwrap();
        let took = within(Duration::from_secs(5), || async {
            caller.get("/v1/models").await.status() == 401
        })
        .await;
        assert!(
            took <= Duration::from_secs(1),
            "{db:?}: refused only after {took:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for task in load {
            all.extend(task.await.unwrap());
        }
        assert!(all.len() > 8, "the load ran");
        // Once refused, never accepted again.
        let after: Vec<u16> = all
            .iter()
            .rev()
            .take_while(|s| **s == 401)
            .copied()
            .collect();
        assert!(!after.is_empty(), "{db:?}");
        assert!(all.iter().all(|s| *s == 200 || *s == 401), "{all:?}");
        for _ in 0..5 {
            assert_eq!(caller.get("/v1/models").await.status(), 401);
        }
    }
}

#[tokio::test]
async fn new_and_revoked_keys_reach_every_server_sharing_the_database() {
    for db in TestDb::all() {
        let url = db.fresh_url();
        let models = vec![standard_models().remove(0)];
        let (first, _s1) = spawn_custom(test_config_on(models.clone(), &url)).await;
        let (second, _s2) = spawn_custom(test_config_on(models, &url)).await;
        // A key created after both servers started works on both at once (read on a miss).
        let conn = first.db().await;
        let (_, key) = tenant_with_key(&conn, None).await;
        assert_eq!(status_of(&first, Some(&key)).await, 200, "{db:?}");
        assert_eq!(status_of(&second, Some(&key)).await, 200, "{db:?}");
        keys::revoke_key(&conn, Scope::Platform, public_id(&key), &Actor::cli())
            .await
            .unwrap();
        for app in [&first, &second] {
            let took = within(Duration::from_secs(5), || async {
                status_of(app, Some(&key)).await == 401
            })
            .await;
            assert!(took <= Duration::from_secs(1), "{db:?}: {took:?}");
        }
    }
}

#[tokio::test]
async fn an_expired_key_and_its_tokens_are_refused() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (_, key) = tenant_with_key(&conn, None).await;
        let token = jwt_keys::mint_key_token(
            &conn,
            Scope::Platform,
            public_id(&key),
            chrono::Duration::hours(1),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status_of(&app, Some(&key)).await, 200, "{db:?}");
        assert_eq!(status_of(&app, Some(&token)).await, 200, "{db:?}");
        // Expire it (as time would): the row says so, and the cache picks it up.
        let row = keys::find_key(&conn, public_id(&key))
            .await
            .unwrap()
            .unwrap();
        let mut active = row.into_active_model();
        active.expires_at = Set(Some(Utc::now() - chrono::Duration::seconds(1)));
        active.updated_at = Set(Utc::now());
        active.update(&conn).await.unwrap();
        within(Duration::from_secs(5), || async {
            status_of(&app, Some(&key)).await == 401
        })
        .await;
        assert_eq!(status_of(&app, Some(&token)).await, 401);
        // Creating a key that is already expired is refused.
        let tenant = keys::find_key(&conn, public_id(&key))
            .await
            .unwrap()
            .unwrap()
            .tenant_id;
        let err = keys::insert_key(
            &conn,
            keys::NewKey {
                tenant_id: tenant,
                expires_at: Some(Utc::now() - chrono::Duration::days(1)),
                ..Default::default()
            },
            &Actor::cli(),
        )
        .await;
        assert!(err.is_err());
    }
}

#[tokio::test]
async fn last_used_at_is_coalesced_and_written_at_shutdown() {
    for db in TestDb::all() {
        let mut config = test_config_on(vec![standard_models().remove(0)], &db.fresh_url());
        config.auth.last_used_flush_secs = 3600;
        let (app, server) = spawn_custom(config).await;
        let key = app.key.clone().unwrap();
        for _ in 0..5 {
            assert_eq!(app.get("/v1/models").await.status(), 200);
        }
        let conn = app.db().await;
        let row = keys::find_key(&conn, public_id(&key))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.last_used_at, None, "{db:?}: no write per request");
        let before = row.updated_at;
        server.handle().stop(true).await;
        server.run_until_stopped().await.unwrap();
        let row = keys::find_key(&conn, public_id(&key))
            .await
            .unwrap()
            .unwrap();
        let used = row.last_used_at.expect("written at shutdown");
        assert!(used <= Utc::now() && used > Utc::now() - chrono::Duration::minutes(5));
        assert_eq!(
            row.updated_at, before,
            "last use is not a change the caches re-read"
        );
    }
}

// ---------- JWT ----------

const HS256_SECRET: &str = "a-tenant-shared-secret-of-32-bytes-or-more";

fn hs256_key(tenant_id: i64, issuer: Option<&str>, audience: Option<&str>) -> jwt_keys::NewJwtKey {
    jwt_keys::NewJwtKey {
        tenant_id,
        name: None,
        algorithm: "HS256".into(),
        secret: Some(HS256_SECRET.to_string().into()),
        public_key: None,
        issuer: issuer.map(str::to_string),
        audience: audience.map(str::to_string),
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn minted_tokens_stand_for_their_key_with_narrower_models_and_an_end_user() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (tenant, key) = tenant_with_key(&conn, None).await;
        let token = jwt_keys::mint_key_token(
            &conn,
            Scope::Platform,
            public_id(&key),
            chrono::Duration::minutes(10),
            Some("end-user-42".into()),
            Some(vec![CHAT.into()]),
        )
        .await
        .unwrap();
        let by_token = app.with_key(Some(&token));
        assert_eq!(
            by_token
                .post("/v1/chat/completions", &hello(CHAT))
                .await
                .status(),
            200,
            "{db:?}"
        );
        let (status, _) = by_token
            .post_json("/v1/chat/completions", &hello(LLAMA))
            .await;
        assert_eq!(status, 403);
        let (_, list) = by_token.get_json("/v1/models").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        let auth = aiaas_admin::auth::Authenticator::start(conn.clone(), Default::default())
            .await
            .unwrap();
        let caller = auth.authenticate(&token).await.unwrap();
        assert_eq!(caller.tenant_id, tenant);
        assert_eq!(caller.subject.as_deref(), Some("end-user-42"));
        assert_eq!(caller.key_public_id.as_deref(), Some(public_id(&key)));
        // Revoking the key revokes its tokens.
        keys::revoke_key(&conn, Scope::Platform, public_id(&key), &Actor::cli())
            .await
            .unwrap();
        within(Duration::from_secs(5), || async {
            status_of(&app, Some(&token)).await == 401
        })
        .await;
        assert!(jwt_keys::mint_key_token(
            &conn,
            Scope::Platform,
            public_id(&key),
            chrono::Duration::hours(1),
            None,
            None
        )
        .await
        .is_err());
    }
}

#[tokio::test]
async fn tenant_signed_tokens_verify_with_each_registered_algorithm() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (tenant, _) = tenant_with_key(&conn, None).await;
        let cases = [
            ("RS256", Algorithm::RS256, "rs256"),
            ("ES256", Algorithm::ES256, "es256"),
            ("EdDSA", Algorithm::EdDSA, "eddsa"),
        ];
        for (name, alg, file) in cases {
            let row = jwt_keys::insert_jwt_key(
                &conn,
                jwt_keys::NewJwtKey {
                    tenant_id: tenant,
                    name: None,
                    algorithm: name.into(),
                    secret: None,
                    public_key: Some(jwt_fixture(&format!("{file}-public.pem"))),
                    issuer: Some("https://tenant.example".into()),
                    audience: Some("aiaas".into()),
                },
                &Actor::cli(),
            )
            .await
            .unwrap();
            let private = jwt_fixture(&format!("{file}-private.pem"));
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
                Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
                _ => EncodingKey::from_ed_pem(private.as_bytes()),
            }
            .unwrap();
            let token = sign(
                alg,
                Some(&row.kid),
                json!({"exp": Utc::now().timestamp() + 300, "sub": "user-7",
                       "iss": "https://tenant.example", "aud": "aiaas"}),
                &key,
            );
            assert_eq!(status_of(&app, Some(&token)).await, 200, "{db:?} {name}");
        }
        let hs = jwt_keys::insert_jwt_key(&conn, hs256_key(tenant, None, None), &Actor::cli())
            .await
            .unwrap();
        let token = sign(
            Algorithm::HS256,
            Some(&hs.kid),
            json!({"exp": Utc::now().timestamp() + 300, "models": [CHAT]}),
            &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        );
        assert_eq!(status_of(&app, Some(&token)).await, 200, "{db:?} HS256");
        let (status, _) = app
            .with_key(Some(&token))
            .post_json("/v1/chat/completions", &hello(LLAMA))
            .await;
        assert_eq!(status, 403, "the token's models narrow what it may use");
        // Disabling the key refuses its tokens within a second; enabling restores them.
        jwt_keys::set_jwt_key_enabled(&conn, Scope::Tenant(tenant), &hs.kid, false, &Actor::cli())
            .await
            .unwrap();
        let took = within(Duration::from_secs(5), || async {
            status_of(&app, Some(&token)).await == 401
        })
        .await;
        assert!(took <= Duration::from_secs(1), "{took:?}");
        jwt_keys::set_jwt_key_enabled(&conn, Scope::Tenant(tenant), &hs.kid, true, &Actor::cli())
            .await
            .unwrap();
        within(Duration::from_secs(5), || async {
            status_of(&app, Some(&token)).await == 200
        })
        .await;
    }
}

#[tokio::test]
async fn forged_expired_and_misaddressed_jwts_are_refused() {
    for db in TestDb::all() {
        let (app, _server) = server_on(db).await;
        let conn = app.db().await;
        let (tenant, _) = tenant_with_key(&conn, None).await;
        let rsa = jwt_keys::insert_jwt_key(
            &conn,
            jwt_keys::NewJwtKey {
                tenant_id: tenant,
                name: None,
                algorithm: "RS256".into(),
                secret: None,
                public_key: Some(jwt_fixture("rs256-public.pem")),
                issuer: Some("https://tenant.example".into()),
                audience: Some("aiaas".into()),
            },
            &Actor::cli(),
        )
        .await
        .unwrap();
        let private =
            EncodingKey::from_rsa_pem(jwt_fixture("rs256-private.pem").as_bytes()).unwrap();
        let rs256 = |claims: Value| sign(Algorithm::RS256, Some(&rsa.kid), claims, &private);
        let now = Utc::now().timestamp();
        let good =
            json!({"exp": now + 300, "iss": "https://tenant.example", "aud": "aiaas", "sub": "u"});
        let with = |patch: Value| {
            let mut claims = good.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            claims
        };
        assert_eq!(
            status_of(&app, Some(&rs256(good.clone()))).await,
            200,
            "{db:?}: the well-formed token works"
        );
        let unsigned = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": rsa.kid})),
            b64(&good)
        );
        // Algorithm confusion: HS256 "signed" with the RSA public key as the shared secret.
        let confused = sign(
            Algorithm::HS256,
            Some(&rsa.kid),
            good.clone(),
            &EncodingKey::from_secret(jwt_fixture("rs256-public.pem").as_bytes()),
        );
        let other_key =
            EncodingKey::from_ec_pem(jwt_fixture("es256-private.pem").as_bytes()).unwrap();
        let mut tampered = rs256(good.clone());
        let payload = b64(&with(json!({"sub": "admin"})));
        let parts: Vec<&str> = tampered.split('.').collect();
        tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        let cases: Vec<(&str, String)> = vec![
            ("alg none", unsigned),
            ("algorithm confusion", confused),
            (
                "wrong signing key",
                sign(Algorithm::ES256, Some(&rsa.kid), good.clone(), &other_key),
            ),
            ("tampered payload", tampered),
            ("missing exp", rs256(with(json!({"exp": null})))),
            ("past exp", rs256(with(json!({"exp": now - 3600})))),
            ("future nbf", rs256(with(json!({"nbf": now + 3600})))),
            (
                "wrong iss",
                rs256(with(json!({"iss": "https://evil.example"}))),
            ),
            ("missing iss", rs256(with(json!({"iss": null})))),
            ("wrong aud", rs256(with(json!({"aud": "someone-else"})))),
            (
                "unknown kid",
                sign(
                    Algorithm::RS256,
                    Some("jwk_doesnotexist0000"),
                    good.clone(),
                    &private,
                ),
            ),
            (
                "no kid",
                sign(Algorithm::RS256, None, good.clone(), &private),
            ),
        ];
        for (what, token) in cases {
            assert_eq!(status_of(&app, Some(&token)).await, 401, "{db:?}: {what}");
        }
        // A minted-token claim in a tenant's token does not make it a key's token.
        let platform = jwt_key::Entity::find()
            .filter(jwt_key::Column::TenantId.is_null())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        let forged_platform = sign(
            Algorithm::HS256,
            Some(&platform.kid),
            json!({"exp": now + 300, "iss": "aiaas", "aiaas_key": "aaaaaaaaaaaa"}),
            &EncodingKey::from_secret(b"guessed-secret-guessed-secret-guessed"),
        );
        assert_eq!(status_of(&app, Some(&forged_platform)).await, 401);
    }
}

// ---------- command line ----------

/// Run the `aiaas` binary as an operator would. Asynchronous on purpose: a test's server runs on
/// the test's own runtime, so waiting for the child on that thread would stall the server while
/// the child waits for the server's SQLite write lock (it then fails with "database is locked").
pub(super) async fn aiaas(
    args: &[&str],
    database_url: &str,
    stdin: Option<&str>,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(aiaas_bin())
        .args(args)
        .arg("--database-url")
        .arg(database_url)
        .env("AIAAS_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the aiaas binary (built by `cargo build --workspace`)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_line(text: &str) -> String {
    text.trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn operators_script_tenants_keys_users_and_jwt_keys_from_the_command_line() {
    for db in TestDb::all() {
        let url = db.fresh_url();
        let run = async |args: &[&str], stdin: Option<&str>| {
            let (ok, out, err) = aiaas(args, &url, stdin).await;
            assert!(ok, "{db:?} aiaas {args:?} failed: {err}");
            out
        };
        let out = run(&["migrate"], None).await;
        let applied =
            <aiaas_migrations::Migrator as aiaas_migrations::MigratorTrait>::migrations().len();
        assert!(
            out.contains(&format!("applied {applied} migration")),
            "{out}"
        );
        run(&["tenant", "create", "acme"], None).await;
        run(&["tenant", "create", "globex"], None).await;
        let (ok, _, err) = aiaas(&["tenant", "create", "acme"], &url, None).await;
        assert!(!ok && err.contains("already exists"), "{err}");
        let list = run(&["tenant", "list"], None).await;
        assert!(
            list.contains("\tacme\t") && list.contains("\tglobex\t"),
            "{list}"
        );

        let key = last_line(
            &run(
                &[
                    "key",
                    "create",
                    "--tenant",
                    "acme",
                    "--name",
                    "ci",
                    "--models",
                    CHAT,
                    "--expires",
                    "30d",
                ],
                None,
            )
            .await,
        );
        assert!(keys::parse_key(&key).is_some(), "{key}");
        let id = public_id(&key).to_string();
        let listing = run(&["key", "list", "--tenant", "acme"], None).await;
        assert!(
            listing.contains(&id) && !listing.contains(keys::parse_key(&key).unwrap().secret),
            "{listing}"
        );
        assert!(!run(&["key", "list", "--tenant", "globex"], None)
            .await
            .contains(&id));
        let token = last_line(
            &run(
                &["key", "token", &id, "--ttl", "1h", "--sub", "alice"],
                None,
            )
            .await,
        );
        assert_eq!(token.split('.').count(), 3, "{token}");

        // The server started on this database accepts both, and refuses the key once revoked.
        let (app, server) =
            spawn_custom(test_config_on(vec![standard_models().remove(0)], &url)).await;
        assert!(app.key.is_none(), "tenants exist: no first key");
        assert_eq!(status_of(&app, Some(&key)).await, 200, "{db:?}");
        assert_eq!(status_of(&app, Some(&token)).await, 200, "{db:?}");
        run(&["key", "revoke", &id], None).await;
        within(Duration::from_secs(5), || async {
            status_of(&app, Some(&key)).await == 401
        })
        .await;

        let user = run(
            &[
                "user",
                "create",
                "--email",
                "Admin@Acme.example",
                "--role",
                "tenant_admin",
                "--tenant",
                "acme",
            ],
            Some("a long enough password\n"),
        )
        .await;
        assert!(user.contains("admin@acme.example\ttenant_admin"), "{user}");
        let conn = app.db().await;
        let password: secrecy::SecretString = "a long enough password".to_string().into();
        let found = aiaas_admin::users::authenticate_user(&conn, "admin@acme.example", &password)
            .await
            .unwrap();
        assert!(found.unwrap().password_hash.starts_with("$argon2id$"));
        let (ok, _, err) = aiaas(
            &["user", "create", "--email", "x@y.z", "--role", "operator"],
            &url,
            Some("short"),
        )
        .await;
        assert!(!ok && err.contains("at least"), "{err}");

        let pem =
            std::env::temp_dir().join(format!("aiaas-test-{}.pem", uuid::Uuid::new_v4().simple()));
        std::fs::write(&pem, jwt_fixture("es256-public.pem")).unwrap();
        let kid = last_line(
            &run(
                &[
                    "jwt-key",
                    "add",
                    "--tenant",
                    "acme",
                    "--alg",
                    "ES256",
                    "--public-key",
                    pem.to_str().unwrap(),
                    "--audience",
                    "aiaas",
                ],
                None,
            )
            .await,
        );
        std::fs::remove_file(&pem).ok();
        assert!(kid.starts_with("jwk_"), "{kid}");
        let (ok, _, err) = aiaas(
            &[
                "jwt-key",
                "add",
                "--tenant",
                "acme",
                "--alg",
                "none",
                "--secret-env",
                "PATH",
            ],
            &url,
            None,
        )
        .await;
        assert!(!ok && err.contains("unsupported algorithm"), "{err}");
        let private =
            EncodingKey::from_ec_pem(jwt_fixture("es256-private.pem").as_bytes()).unwrap();
        let tenant_token = sign(
            Algorithm::ES256,
            Some(&kid),
            json!({"exp": Utc::now().timestamp() + 60, "aud": "aiaas"}),
            &private,
        );
        assert_eq!(status_of(&app, Some(&tenant_token)).await, 200, "{db:?}");
        run(&["jwt-key", "disable", &kid], None).await;
        within(Duration::from_secs(5), || async {
            status_of(&app, Some(&tenant_token)).await == 401
        })
        .await;

        // Every change is in the audit log.
        let actions: Vec<String> = audit_log::Entity::find()
            .all(&conn)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        for action in [
            "tenant.create",
            "key.create",
            "key.revoke",
            "user.create",
            "jwt_key.create",
            "jwt_key.disable",
        ] {
            assert!(
                actions.iter().any(|a| a == action),
                "{db:?}: no {action} in {actions:?}"
            );
        }
        let revoked = api_key::Entity::find()
            .filter(api_key::Column::PublicId.eq(&id))
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        assert!(revoked.revoked_at.is_some());

        server.handle().stop(true).await;
        server.run_until_stopped().await.unwrap();
        let out = run(&["migrate", "--down", "1"], None).await;
        assert!(out.contains("rolled back 1"), "{out}");
    }
}
