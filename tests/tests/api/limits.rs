//! Rate limits, budgets and admission, end to end: exact limits and headers, token reservations
//! and refunds, the concurrency cap under 32 parallel streams, budget races on SQLite and
//! PostgreSQL (and across two server processes sharing the database and Redis), Redis going away
//! mid-test, and the engine queue's bound and deadline.

use std::time::Duration;

use aiaas_admin::audit::Actor;
use aiaas_admin::budgets::{self, Period};
use aiaas_admin::limits::{self, Limits, LimitsChange};
use aiaas_admin::{keys, tenants, Scope};
use aiaas_tests::*;
use futures::future::join_all;
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::auth::within;

/// A new tenant (with `tenant_limits`) and one key (with `key_limits`): (tenant id, key).
async fn tenant_key(
    db: &DatabaseConnection,
    tenant_limits: Limits,
    key_limits: Limits,
) -> (i64, String) {
    let name = format!("t-{}", uuid::Uuid::new_v4().simple());
    let tenant = tenants::insert_tenant(db, &name, &Actor::cli())
        .await
        .unwrap();
    if !tenant_limits.is_unlimited() {
        let change = LimitsChange {
            rpm: Some(tenant_limits.rpm),
            rpm_burst: Some(tenant_limits.rpm_burst),
            tpm: Some(tenant_limits.tpm),
            tpm_burst: Some(tenant_limits.tpm_burst),
            max_concurrent: Some(tenant_limits.max_concurrent),
        };
        limits::update_tenant_limits(db, Scope::Platform, tenant.id, change, &Actor::cli())
            .await
            .unwrap();
    }
    let key = keys::insert_key(
        db,
        keys::NewKey {
            tenant_id: tenant.id,
            limits: key_limits,
            ..Default::default()
        },
        &Actor::cli(),
    )
    .await
    .unwrap();
    (tenant.id, key.secret.expose_secret().to_string())
}

fn rpm(n: i64) -> Limits {
    Limits {
        rpm: Some(n),
        ..Default::default()
    }
}

/// A chat request whose greedy answer runs to `max_tokens` (checked where it matters).
fn hello(max_tokens: u64) -> Value {
    super::chat(CHAT, json!({"max_tokens": max_tokens}))
}

/// A streaming request that keeps eight places of the engine busy for a while: eight greedy
/// choices that each run to all 480 tokens (tiny-llama's greedy answer to this never stops
/// early; a tiny model makes a token in well under a millisecond).
fn long_stream() -> Value {
    json!({"model": LLAMA, "stream": true, "max_tokens": 480, "temperature": 0, "n": 8,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "count"}]})
}

async fn server_on(db: TestDb) -> (TestApp, aiaas_server::Application) {
    let models = standard_models()
        .into_iter()
        .filter(|m| m.id == CHAT || m.id == LLAMA)
        .collect();
    spawn_custom(test_config_on(models, &db.fresh_url())).await
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn number(res: &reqwest::Response, name: &str) -> i64 {
    header(res, name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_key_with_rpm_n_gets_n_successes_then_429_with_openai_headers() {
    let (app, _server) = server_on(TestDb::Sqlite).await;
    let (_, key) = tenant_key(&app.db().await, Limits::default(), rpm(3)).await;
    let app = app.with_key(Some(&key));
    for left in [2, 1, 0] {
        let res = app.post("/v1/chat/completions", &hello(1)).await;
        assert_eq!(res.status(), 200);
        assert_eq!(number(&res, "x-ratelimit-limit-requests"), 3);
        assert_eq!(number(&res, "x-ratelimit-remaining-requests"), left);
        let reset = header(&res, "x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s'), "{reset}");
        assert!(
            header(&res, "x-ratelimit-limit-tokens").is_none(),
            "no token limit set"
        );
    }
    let res = app.post("/v1/chat/completions", &hello(1)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(number(&res, "x-ratelimit-remaining-requests"), 0);
    let retry_ms = number(&res, "retry-after-ms");
    assert!((1..=20_000).contains(&retry_ms), "{retry_ms}");
    assert_eq!(number(&res, "retry-after"), (retry_ms + 999) / 1000);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("requests per minute (RPM) on this API key: Limit 3"),
        "{message}"
    );
    // Other endpoints report the same state without spending it.
    let res = app.get("/v1/models").await;
    assert_eq!(res.status(), 200);
    assert_eq!(number(&res, "x-ratelimit-remaining-requests"), 0);
    // A refusal spends nothing: the next request is still refused for the same reason only.
    let res = app
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT, "messages": []}),
        )
        .await;
    assert_eq!(res.status(), 400, "bad input is refused before admission");
    assert_eq!(number(&res, "x-ratelimit-limit-requests"), 3);
}

#[tokio::test]
async fn tokens_are_reserved_at_the_worst_case_and_the_unused_part_comes_back() {
    let (app, _server) = server_on(TestDb::Sqlite).await;
    let limits = Limits {
        tpm: Some(600),
        ..Default::default()
    };
    let (_, key) = tenant_key(&app.db().await, Limits::default(), limits).await;
    let app = app.with_key(Some(&key));
    let res = app.post("/v1/chat/completions", &hello(64)).await;
    assert_eq!(res.status(), 200);
    let after_admission = number(&res, "x-ratelimit-remaining-tokens");
    assert_eq!(number(&res, "x-ratelimit-limit-tokens"), 600);
    let body: Value = res.json().await.unwrap();
    let prompt = body["usage"]["prompt_tokens"].as_i64().unwrap();
    let used = body["usage"]["total_tokens"].as_i64().unwrap();
    // Admission reserved the prompt plus all 64 completion tokens (a second of refill at
    // most on top: 10 tokens a second).
    let worst = prompt + 64;
    assert!(
        (600 - worst..=600 - worst + 10).contains(&after_admission),
        "{after_admission} vs worst case {worst}"
    );
    // When it ended, what it did not use came back: only `used` is gone.
    let remaining = within(Duration::from_secs(5), || async {
        let res = app.get("/v1/models").await;
        number(&res, "x-ratelimit-remaining-tokens") >= 600 - used
    })
    .await;
    let res = app.get("/v1/models").await;
    let now = number(&res, "x-ratelimit-remaining-tokens");
    assert!(
        now <= 600 - used + 10 * (remaining.as_secs() as i64 + 2),
        "{now}: only the used tokens are charged ({used})"
    );

    // A request whose worst case is larger than the whole bucket can never fit: refused at
    // once, without a retry hint, and nothing is taken.
    let small = Limits {
        tpm: Some(prompt + 10),
        ..Default::default()
    };
    let (_, key) = tenant_key(&app.db().await, Limits::default(), small).await;
    let small = app.with_key(Some(&key));
    let res = small.post("/v1/chat/completions", &hello(64)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "x-should-retry").as_deref(), Some("false"));
    assert!(header(&res, "retry-after").is_none());
    assert_eq!(number(&res, "x-ratelimit-remaining-tokens"), prompt + 10);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "Request too large for tokens per minute (TPM) on this API key: Limit {}, Requested {}",
            prompt + 10,
            prompt + 64
        )),
        "{message}"
    );
    // One that fits is served.
    let res = small.post("/v1/chat/completions", &hello(8)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn admission_counts_each_prompt_as_the_engine_then_bills_it() {
    // Admission counts a prompt without the engine (its template and tokenizer, rendered off
    // the engine loop); the engine renders and tokenizes it again when it runs. The two must
    // agree to the token: a key whose budget is one token short of the billed prompt plus
    // `max_tokens` is refused, and the refusal names exactly that sum.
    let models = standard_models()
        .into_iter()
        .filter(|m| [CHAT, LLAMA, TOOLS].contains(&m.id.as_str()))
        .collect();
    let (app, _server) = spawn_custom(test_config_on(models, &TestDb::Sqlite.fresh_url())).await;
    let weather = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather for a city", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let cases = [
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": "one two three four", "max_tokens": 3}),
        ),
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": ["one two", "three"], "max_tokens": 2}),
        ),
        ("/v1/chat/completions", hello(5)),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "max_tokens": 4, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello, world"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Again"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": TOOLS, "max_tokens": 3, "tools": weather, "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "get_weather",
                    "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
        ),
    ];
    for (path, body) in cases {
        let (_, key) = tenant_key(&app.db().await, Limits::default(), Limits::default()).await;
        let res = app.with_key(Some(&key)).post(path, &body).await;
        assert_eq!(res.status(), 200, "{body}");
        let served: Value = res.json().await.unwrap();
        let prompt = served["usage"]["prompt_tokens"].as_i64().unwrap();
        let choices = body["prompt"].as_array().map_or(1, Vec::len) as i64;
        let worst = prompt + choices * body["max_tokens"].as_i64().unwrap();
        let short = Limits {
            tpm: Some(worst - 1),
            ..Default::default()
        };
        let (_, key) = tenant_key(&app.db().await, Limits::default(), short).await;
        let res = app.with_key(Some(&key)).post(path, &body).await;
        assert_eq!(res.status(), 429, "{body}");
        let refused: Value = res.json().await.unwrap();
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("Limit {}, Requested {worst}", worst - 1)),
            "{body}: {message}"
        );
        // With exactly the worst case in the bucket it is served.
        let exact = Limits {
            tpm: Some(worst),
            ..Default::default()
        };
        let (_, key) = tenant_key(&app.db().await, Limits::default(), exact).await;
        let res = app.with_key(Some(&key)).post(path, &body).await;
        assert_eq!(res.status(), 200, "{body}");
    }
}

#[tokio::test]
async fn the_stricter_of_key_and_tenant_wins_and_changes_apply_within_a_second() {
    let (app, _server) = server_on(TestDb::Sqlite).await;
    let db = app.db().await;
    let (tenant_id, key) = tenant_key(&db, rpm(2), rpm(100)).await;
    let app = app.with_key(Some(&key));
    // A new key's own limits apply at once; its tenant's once the policy cache has read them
    // (within a second). Reading the state spends nothing.
    within(Duration::from_secs(1), || async {
        let res = app.get("/v1/models").await;
        header(&res, "x-ratelimit-limit-requests").as_deref() == Some("2")
    })
    .await;
    for _ in 0..2 {
        let res = app.post("/v1/chat/completions", &hello(1)).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            number(&res, "x-ratelimit-limit-requests"),
            2,
            "tenant is stricter"
        );
    }
    let res = app.post("/v1/chat/completions", &hello(1)).await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("on your organization"));

    // Lift the tenant's limit: within a second the key's own limit is what counts.
    let lift = LimitsChange {
        rpm: Some(None),
        ..Default::default()
    };
    limits::update_tenant_limits(&db, Scope::Platform, tenant_id, lift, &Actor::cli())
        .await
        .unwrap();
    let took = within(Duration::from_secs(1), || async {
        app.post("/v1/chat/completions", &hello(1)).await.status() == 200
    })
    .await;
    eprintln!("tenant limit lifted after {took:?}");
    let res = app.post("/v1/chat/completions", &hello(1)).await;
    assert_eq!(number(&res, "x-ratelimit-limit-requests"), 100);

    // Tighten the key: applies within a second too.
    let tighten = LimitsChange {
        rpm: Some(Some(1)),
        ..Default::default()
    };
    let public_id = keys::parse_key(&key).unwrap().public_id.to_string();
    limits::update_key_limits(&db, Scope::Platform, &public_id, tighten, &Actor::cli())
        .await
        .unwrap();
    within(Duration::from_secs(1), || async {
        app.post("/v1/chat/completions", &hello(1)).await.status() == 429
    })
    .await;
}

#[tokio::test]
async fn the_concurrency_cap_holds_with_32_parallel_streams() {
    let (app, _server) = server_on(TestDb::Sqlite).await;
    let limits = Limits {
        max_concurrent: Some(4),
        ..Default::default()
    };
    let (_, key) = tenant_key(&app.db().await, Limits::default(), limits).await;
    let app = app.with_key(Some(&key));
    let body = long_stream();
    let outcomes = join_all((0..32).map(|_| {
        let (app, body) = (app.clone(), body.clone());
        async move {
            let res = app.post("/v1/chat/completions", &body).await;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            (status, text)
        }
    }))
    .await;
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&String> = outcomes
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(ok + refused.len(), 32, "only 200s and 429s");
    assert!(ok >= 4, "four run at once: {ok}");
    // Requests arrive within milliseconds and each runs for 400 tokens: without the cap all
    // 32 would run; with it only the first four (and any that arrive after one has ended).
    assert!(ok < 16, "the cap of 4 held: {ok} of 32 ran");
    for text in &refused {
        assert!(text.contains("Too many concurrent requests"), "{text}");
    }
    for (status, text) in &outcomes {
        if *status == 200 {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        }
    }
    // Every slot came back: four more run at once again.
    let again = join_all((0..4).map(|_| {
        let (app, body) = (app.clone(), body.clone());
        async move { app.post("/v1/chat/completions", &body).await.status() }
    }))
    .await;
    assert!(again.iter().all(|s| *s == 200), "{again:?}");
}

/// The greedy completion of `hello(max_tokens)` runs to `max_tokens`; returns its total tokens.
async fn exact_cost(app: &TestApp, max_tokens: u64) -> i64 {
    let (status, body) = app
        .post_json("/v1/chat/completions", &hello(max_tokens))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["usage"]["completion_tokens"], max_tokens,
        "the probe prompt must not stop early"
    );
    body["usage"]["total_tokens"].as_i64().unwrap()
}

/// 64 concurrent requests (spread over `apps`) against a budget for exactly 10 of them.
async fn budget_race(apps: &[TestApp], db: &DatabaseConnection) {
    let name = format!("b-{}", uuid::Uuid::new_v4().simple());
    let tenant = tenants::insert_tenant(db, &name, &Actor::cli())
        .await
        .unwrap();
    let key = keys::insert_key(
        db,
        keys::NewKey {
            tenant_id: tenant.id,
            ..Default::default()
        },
        &Actor::cli(),
    )
    .await
    .unwrap();
    let key = key.secret.expose_secret().to_string();
    let cost = exact_cost(&apps[0].with_key(Some(&key)), 4).await;
    let cap = 10 * cost;
    budgets::set_budget(
        db,
        Scope::Platform,
        tenant.id,
        None,
        budgets::Cap::tokens(cap),
        Period::Monthly,
        &Actor::cli(),
    )
    .await
    .unwrap();
    // Every replica sees the budget before the race starts: a request whose worst case (four
    // choices filling the context) is far above the cap is refused there, and spends nothing.
    let too_big = super::chat(CHAT, json!({"max_tokens": 480, "n": 4, "temperature": 1.0}));
    for app in apps {
        let app = app.with_key(Some(&key));
        within(Duration::from_secs(2), || async {
            let (status, body) = app.post_json("/v1/chat/completions", &too_big).await;
            status == 429 && body["error"]["code"] == "insufficient_quota"
        })
        .await;
    }

    let outcomes = join_all((0..64).map(|i| {
        let app = apps[i % apps.len()].with_key(Some(&key));
        async move {
            let (status, body) = app.post_json("/v1/chat/completions", &hello(4)).await;
            (status, body)
        }
    }))
    .await;
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count();
    for (status, body) in &outcomes {
        match status {
            200 => assert_eq!(body["usage"]["total_tokens"], cost),
            429 => assert_eq!(body["error"]["code"], "insufficient_quota", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 10, "exactly the 10 the budget allows succeed");
    // Settlement is written right after each response: wait for the last, then the ledger of
    // the budget shows exactly the 10 requests' cost, nothing reserved, never above the cap.
    let status = loop {
        let list = budgets::list_budgets(db, tenant.id).await.unwrap();
        if list[0].reserved == 0 {
            break list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.spent, 10 * cost);
    assert!(status.spent <= cap);
}

#[tokio::test]
async fn a_budget_race_of_64_requests_admits_exactly_the_10_it_allows_on_every_backend() {
    for backend in TestDb::all() {
        let (app, _server) = server_on(backend).await;
        let db = app.db().await;
        budget_race(&[app], &db).await;
    }
}

#[tokio::test]
async fn two_server_processes_share_budgets_through_the_database_and_limits_through_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let backend = TestDb::default_backend();
    let (url, db) = fresh_migrated(backend).await;
    let (_, key) = tenant_key(&db, Limits::default(), rpm(4)).await;
    let env = [("AIAAS__LIMITS__REDIS_URL", redis.url())];
    let a = spawn_process(&url, &env, &key).await;
    let b = spawn_process(&url, &env, &key).await;
    let (_, ready) = a.app.get_json("/ready").await;
    assert_eq!(ready["limits"], "redis");

    // rpm = 4 across both replicas: alternating between them, 4 succeed, then both refuse.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a.app } else { &b.app };
        let res = app.post("/v1/chat/completions", &hello(1)).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "{backend:?}");

    budget_race(&[a.app.clone(), b.app.clone()], &db).await;
}

#[tokio::test]
async fn redis_going_away_mid_test_leaves_the_server_serving_with_local_limits() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut config = test_config_on(
        standard_models()
            .into_iter()
            .filter(|m| m.id == CHAT)
            .collect(),
        &TestDb::Sqlite.fresh_url(),
    );
    config.limits.redis_url = Some(redis.url());
    config.limits.redis_timeout_ms = 200;
    let (app, _server) = spawn_custom(config).await;
    let (_, key) = tenant_key(&app.db().await, Limits::default(), rpm(50)).await;
    let app = app.with_key(Some(&key));
    let res = app.post("/v1/chat/completions", &hello(1)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(number(&res, "x-ratelimit-remaining-requests"), 49);
    assert_eq!(app.get_json("/ready").await.1["limits"], "redis");

    let port = redis.stop();
    for _ in 0..5 {
        let res = app.post("/v1/chat/completions", &hello(1)).await;
        assert_eq!(res.status(), 200, "served while Redis is down");
        assert!(header(&res, "x-ratelimit-limit-requests").is_some());
    }
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200);
    assert_eq!(ready["limits"], "local (redis unreachable)");

    // Back again: within a few seconds the limits are shared again.
    let _redis = RedisServer::start_on(port).await.unwrap();
    within(Duration::from_secs(10), || async {
        let _ = app.post("/v1/chat/completions", &hello(1)).await;
        app.get_json("/ready").await.1["limits"] == "redis"
    })
    .await;
}

#[tokio::test]
async fn a_full_engine_queue_answers_503_and_a_queue_deadline_504_and_neither_is_billed() {
    let mut config = test_config_on(
        standard_models()
            .into_iter()
            .filter(|m| m.id == LLAMA)
            .collect(),
        &TestDb::Sqlite.fresh_url(),
    );
    // Eight places to run and room for nine requests in the engine: while eight choices run,
    // a ninth waits for a place, a tenth is refused.
    config.engine.max_running_sequences = 8;
    config.engine.max_queued_requests = 9;
    let (app, _server) = spawn_custom(config).await;
    let db = app.db().await;
    let (tenant_id, key) = tenant_key(&db, Limits::default(), Limits::default()).await;
    let app = app.with_key(Some(&key));
    let short = json!({"model": LLAMA, "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}]});
    let set_budget = |tokens: i64| {
        let db = db.clone();
        async move {
            budgets::set_budget(
                &db,
                Scope::Platform,
                tenant_id,
                None,
                budgets::Cap::tokens(tokens),
                Period::Monthly,
                &Actor::cli(),
            )
            .await
            .unwrap();
        }
    };
    // Make sure the server has the budget before the test: a budget of one token refuses a
    // request (charging nothing), then a large one lets the next through (charging it).
    set_budget(1).await;
    within(Duration::from_secs(1), || async {
        app.post("/v1/chat/completions", &short).await.status() == 429
    })
    .await;
    set_budget(1_000_000).await;
    let started = std::time::Instant::now();
    let probe = loop {
        let (status, body) = app.post_json("/v1/chat/completions", &short).await;
        if status == 200 {
            break body["usage"]["total_tokens"].as_i64().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Eight greedy choices of 480 tokens each fill the model's 8 places for a while: a request
    // of two more choices does not fit in the engine and is refused at once.
    let running = app.post("/v1/chat/completions", &long_stream()).await;
    assert_eq!(running.status(), 200);
    let mut two = short.clone();
    two["n"] = json!(2);
    let full = app.post("/v1/chat/completions", &two).await;
    assert_eq!(full.status(), 503);
    assert!(header(&full, "retry-after").is_some());
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_overloaded");

    // One more fits, but waits for a place; with a deadline of 0.2 ms it has not started by
    // then and is cancelled with 504.
    let late = app
        .request(reqwest::Method::POST, "/v1/chat/completions")
        .header("x-aiaas-queue-timeout-ms", "0.2")
        .json(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 504);
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_timeout");

    let events = parse_sse(&running.text().await.unwrap());
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let streamed = usage["usage"]["total_tokens"].as_i64().unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 8 * 480);

    // The budget was charged for the probe and the stream, to the token, and for nothing else.
    let budget = loop {
        let list = budgets::list_budgets(&db, tenant_id).await.unwrap();
        if list[0].reserved == 0 {
            break list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(budget.spent, probe + streamed);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("aiaas_admission_refusals_total{reason=\"queue_full\"} 1"));
    assert!(metrics.contains("aiaas_admission_refusals_total{reason=\"queue_timeout\"} 1"));
    assert!(metrics.contains("aiaas_queue_wait_seconds_count{model=\"tiny-llama\"}"));
}

#[tokio::test]
async fn a_money_budget_is_spent_at_the_model_price_and_holds_exactly() {
    let (app, _server) = server_on(TestDb::Sqlite).await;
    let db = app.db().await;
    // 1,000 and 2,000 per million tokens: 1,000 µ a prompt token, 2,000 µ a completion token.
    aiaas_admin::prices::insert_price(&db, CHAT, 1_000_000_000, 2_000_000_000, None, &Actor::cli())
        .await
        .unwrap();
    let (tenant_id, key) = tenant_key(&db, Limits::default(), Limits::default()).await;
    let app = app.with_key(Some(&key));
    let total = exact_cost(&app, 4).await;
    let cost = (total - 4) * 1000 + 4 * 2000;
    let set = |micros: i64| {
        let db = db.clone();
        async move {
            budgets::set_budget(
                &db,
                Scope::Platform,
                tenant_id,
                None,
                budgets::Cap::micros(micros),
                Period::Monthly,
                &Actor::cli(),
            )
            .await
            .unwrap();
        }
    };
    // A budget of one micro-unit refuses (once the server has the price and the budget)...
    set(1).await;
    within(Duration::from_secs(2), || async {
        let (status, body) = app.post_json("/v1/chat/completions", &hello(4)).await;
        status == 429 && body["error"]["code"] == "insufficient_quota"
    })
    .await;
    // ...then room for exactly three requests: three succeed, the fourth is refused.
    set(3 * cost).await;
    let mut ok = 0;
    let started = std::time::Instant::now();
    while ok < 3 {
        let (status, body) = app.post_json("/v1/chat/completions", &hello(4)).await;
        match status {
            200 => ok += 1,
            429 => assert!(
                ok == 0 && started.elapsed() < Duration::from_secs(2),
                "refused after {ok}: {body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    let (status, body) = app.post_json("/v1/chat/completions", &hello(4)).await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("spend budget"), "{message}");
    let budget = loop {
        let list = budgets::list_budgets(&db, tenant_id).await.unwrap();
        if list[0].reserved == 0 {
            break list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        budget.spent,
        3 * cost,
        "spent at the price, to the micro-unit"
    );
}
