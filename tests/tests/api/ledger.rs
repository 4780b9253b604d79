//! The usage ledger, end to end: one event per admitted request with exactly the usage the client
//! was told, rollups that sum the events, prices by the moment a request started, idempotent
//! replays, a database outage, and `kill -9`.

use std::time::Duration;

use aiaas_admin::audit::Actor;
use aiaas_admin::entity::{model_price, usage_event, usage_rollup};
use aiaas_admin::ledger::rollups::ROLLUPS;
use aiaas_admin::ledger::{write_batch, UsageEvent};
use aiaas_admin::tenants;
use aiaas_tests::*;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{json, Value};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn event(id: &str, model: &str, started: &str, prompt: i64, completion: i64) -> UsageEvent {
    UsageEvent {
        request_id: id.into(),
        tenant_id: Some(7),
        key_id: Some(3),
        end_user: Some("alice".into()),
        model: model.into(),
        endpoint: "/v1/chat/completions".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: None,
        status: "ok".into(),
        http_status: 200,
        stream: false,
        started_at: at(started),
        first_token_at: None,
        finished_at: at(started),
    }
}

fn price(id: i64, model: &str, from: &str, input: i64, output: i64) -> model_price::Model {
    model_price::Model {
        id,
        model: model.into(),
        input_micros_per_mtok: input,
        output_micros_per_mtok: output,
        effective_from: at(from),
        created_at: at(from),
    }
}

/// Sums of (requests, prompt, completion, cost) over rollups of one granularity.
async fn rollup_sums(db: &DatabaseConnection, granularity: &str) -> (i64, i64, i64, i64) {
    let rows = usage_rollup::Entity::find()
        .filter(usage_rollup::Column::Granularity.eq(granularity))
        .all(db)
        .await
        .unwrap();
    rows.iter().fold((0, 0, 0, 0), |s, r| {
        (
            s.0 + r.requests,
            s.1 + r.prompt_tokens,
            s.2 + r.completion_tokens,
            s.3 + r.cost_micros,
        )
    })
}

/// The `key_day` and `key_week` migrations back-fill per-key rollups equal to those the writer
/// maintains, and their `down` removes them.
#[tokio::test]
async fn the_key_rollup_migration_backfills_what_the_writer_would_have_written() {
    use aiaas_migrations::MigratorTrait;
    for backend in TestDb::all() {
        let (_, db) = fresh_migrated(backend).await;
        let mut events = Vec::new();
        for i in 0..40i64 {
            let mut e = event(
                &format!("kd{i}"),
                ["m1", "m2", "m3"][(i % 3) as usize],
                &format!("2026-11-{:02}T{:02}:05:00Z", 21 + i % 3, i % 24),
                i,
                2 * i,
            );
            e.key_id = Some(1 + i % 4);
            e.end_user = Some(format!("u{}", i % 5));
            events.push(e);
        }
        write_batch(&db, &events, &[]).await.unwrap();
        let conn = &db;
        let key_days = |family: &'static str| async move {
            let mut rows: Vec<_> = usage_rollup::Entity::find()
                .filter(usage_rollup::Column::Granularity.eq(family))
                .all(conn)
                .await
                .unwrap()
                .into_iter()
                .map(|r| {
                    (
                        r.bucket_start,
                        r.tenant_id,
                        r.key_id,
                        r.model,
                        r.end_user,
                        r.endpoint,
                        r.requests,
                        r.errors,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.cost_micros,
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        let days = key_days("key_day").await;
        assert_eq!(days.len(), 12, "{backend:?}: 4 keys × 3 days");
        let weeks = key_days("key_week").await;
        assert_eq!(
            weeks.len(),
            8,
            "{backend:?}: 4 keys × 2 weeks (Saturday 21 and Sunday 22 in one, Monday 23 in the next)"
        );
        assert_eq!(
            weeks.iter().map(|w| w.6).sum::<i64>(),
            40,
            "{backend:?}: every event once"
        );
        aiaas_migrations::Migrator::down(&db, Some(2))
            .await
            .unwrap();
        assert!(key_days("key_day").await.is_empty(), "{backend:?}");
        assert!(key_days("key_week").await.is_empty(), "{backend:?}");
        aiaas_migrations::Migrator::up(&db, None).await.unwrap();
        assert_eq!(key_days("key_day").await, days, "{backend:?}");
        assert_eq!(key_days("key_week").await, weeks, "{backend:?}");
    }
}

/// Every console aggregate (any grouping, any filter) equals the same sums computed from the raw
/// events, whichever rollup family answers it.
#[tokio::test]
async fn console_aggregates_equal_the_raw_events_whichever_rollups_answer() {
    use aiaas_admin::insights::{self, AggQuery, Dim, Filters, Granularity, GroupValue, Sort};
    use std::collections::BTreeMap;
    for backend in TestDb::all() {
        let (_, db) = fresh_migrated(backend).await;
        let prices = vec![price(1, "m1", "2026-11-01T00:00:00Z", 1_000_000, 3_000_000)];
        let mut events = Vec::new();
        for i in 0..120i64 {
            let mut e = event(
                &format!("agg{i}"),
                ["m1", "m2"][(i % 2) as usize],
                &format!("2026-11-{:02}T{:02}:17:00Z", 1 + i % 27, i % 24),
                10 + i,
                i % 7,
            );
            e.tenant_id = Some(1 + i % 2);
            e.key_id = Some(10 + i % 5);
            e.end_user = [None, Some("alice".into()), Some("bob".into())][(i % 3) as usize].clone();
            e.endpoint = ["/v1/chat/completions", "/v1/embeddings"][(i % 4 / 3) as usize].into();
            if i % 11 == 0 {
                e.status = "error".into();
            }
            events.push(e);
        }
        // A key used on one day only, Tuesday 3: a per-key table from Thursday 5 reads the week
        // of Monday 2 minus its first three days, where this key's parts cancel out.
        let mut lone = event("agg-lone", "m1", "2026-11-03T10:00:00Z", 5, 5);
        lone.tenant_id = Some(1);
        lone.key_id = Some(99);
        events.push(lone);
        write_batch(&db, &events, &prices).await.unwrap();
        let raw = usage_event::Entity::find().all(&db).await.unwrap();
        // Ranges with whole ISO weeks (per-key tables then read `key_week` rows for them and
        // `key_day` rows for the days around), without one, and not on day boundaries.
        let ranges = [
            ("2026-11-01T00:00:00Z", "2026-11-28T00:00:00Z"),
            ("2026-11-04T16:00:00Z", "2026-11-24T08:00:00Z"),
            ("2026-11-09T00:00:00Z", "2026-11-16T00:00:00Z"),
            ("2026-11-20T00:00:00Z", "2026-11-25T00:00:00Z"),
        ];
        let filters = [
            Filters::default(),
            Filters {
                key_id: Some(12),
                ..Default::default()
            },
            Filters {
                model: Some("m2".into()),
                ..Default::default()
            },
            Filters {
                end_user: Some("bob".into()),
                ..Default::default()
            },
            Filters {
                key_id: Some(11),
                model: Some("m1".into()),
                ..Default::default()
            },
        ];
        let dims = [
            None,
            Some(Dim::Bucket),
            Some(Dim::Key),
            Some(Dim::Model),
            Some(Dim::User),
            Some(Dim::Endpoint),
        ];
        for ((from, to), granularity) in ranges
            .iter()
            .flat_map(|r| [(r, Granularity::Hour), (r, Granularity::Day)])
        {
            let (from, to) = (at(from), at(to));
            for f in &filters {
                for dim in dims {
                    let query = AggQuery {
                        tenant_id: Some(1),
                        granularity,
                        from,
                        to,
                        filters: f.clone(),
                        group: dim,
                    };
                    let (rows, groups) = insights::grouped(&db, &query, Sort::Requests, 0, 1000)
                        .await
                        .unwrap();
                    let mut want: BTreeMap<String, (i64, i64, i64, i64, i64)> = BTreeMap::new();
                    let step = granularity.seconds();
                    for e in raw.iter().filter(|e| {
                        // A rollup row counts when its bucket starts in [from, to).
                        let secs = e.started_at.timestamp();
                        let bucket = secs - secs.rem_euclid(step);
                        bucket >= from.timestamp()
                            && bucket < to.timestamp()
                            && e.tenant_id == Some(1)
                            && f.key_id.is_none_or(|k| e.key_id == Some(k))
                            && f.model.as_ref().is_none_or(|m| &e.model == m)
                            && f.end_user
                                .as_ref()
                                .is_none_or(|u| e.end_user.as_ref() == Some(u))
                    }) {
                        let secs = e.started_at.timestamp();
                        let group = match dim {
                            None => String::new(),
                            Some(Dim::Bucket) => (secs - secs.rem_euclid(step)).to_string(),
                            Some(Dim::Key) => e.key_id.unwrap().to_string(),
                            Some(Dim::Model) => e.model.clone(),
                            Some(Dim::User) => e.end_user.clone().unwrap_or_default(),
                            Some(Dim::Endpoint) => e.endpoint.clone(),
                        };
                        let t = want.entry(group).or_default();
                        t.0 += 1;
                        t.1 += i64::from(e.status != "ok");
                        t.2 += e.prompt_tokens;
                        t.3 += e.completion_tokens;
                        t.4 += e.cost_micros;
                    }
                    let got: BTreeMap<String, (i64, i64, i64, i64, i64)> = rows
                        .iter()
                        .map(|r| {
                            let group = match &r.group {
                                GroupValue::None => String::new(),
                                GroupValue::Time(t) => t.timestamp().to_string(),
                                GroupValue::Key(k) => k.to_string(),
                                GroupValue::Text(t) => t.clone(),
                            };
                            let t = &r.totals;
                            (
                                group,
                                (
                                    t.requests,
                                    t.errors,
                                    t.prompt_tokens,
                                    t.completion_tokens,
                                    t.cost_micros,
                                ),
                            )
                        })
                        .collect();
                    let case = format!("{backend:?} {from} {to} {granularity:?} {f:?} {dim:?}");
                    if dim.is_none() && want.is_empty() {
                        assert_eq!(got.values().next(), Some(&(0, 0, 0, 0, 0)), "{case}");
                        continue;
                    }
                    assert_eq!(got, want, "{case}");
                    if dim.is_some() {
                        assert_eq!(groups as usize, want.len(), "{case}");
                    }
                }
            }
        }
        // A page past the end is empty and still knows how many groups there are.
        let query = AggQuery {
            tenant_id: Some(1),
            granularity: Granularity::Day,
            from: at("2026-11-01T00:00:00Z"),
            to: at("2026-11-28T00:00:00Z"),
            filters: Filters::default(),
            group: Some(Dim::Key),
        };
        let (rows, groups) = insights::grouped(&db, &query, Sort::Cost, 100, 10)
            .await
            .unwrap();
        assert!(rows.is_empty());
        assert_eq!(groups, 6, "tenant 1 used keys 10 to 14 and 99");

        // Reconciliation covers the weekly rows of the weeks inside its range, and sees one drift.
        let (first, last) = (at("2026-10-26T00:00:00Z"), at("2026-11-30T00:00:00Z"));
        let clean = aiaas_admin::usage::reconcile(&db, first, last)
            .await
            .unwrap();
        assert!(clean.is_empty(), "{backend:?}: {clean:?}");
        db.execute_unprepared(
            "UPDATE usage_rollups SET requests = requests + 1 WHERE id = \
             (SELECT MIN(id) FROM usage_rollups WHERE granularity = 'key_week')",
        )
        .await
        .unwrap();
        let drift = aiaas_admin::usage::reconcile(&db, first, last)
            .await
            .unwrap();
        assert_eq!(
            drift.iter().map(|m| m.granularity).collect::<Vec<_>>(),
            ["key_week"],
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn batches_are_priced_when_each_request_started_and_replays_write_nothing_twice() {
    for backend in TestDb::all() {
        let (_, db) = fresh_migrated(backend).await;
        // 0.15 / 0.60 per million until 12:00, then 1.00 / 2.00.
        let prices = vec![
            price(1, "m", "2026-11-01T00:00:00Z", 150_000, 600_000),
            price(2, "m", "2026-11-24T12:00:00Z", 1_000_000, 2_000_000),
        ];
        let events = vec![
            event("r1", "m", "2026-11-24T11:59:59Z", 1000, 500),
            event("r2", "m", "2026-11-24T12:00:00Z", 1000, 500),
            event("r3", "unpriced", "2026-11-24T13:30:00Z", 10, 5),
        ];
        let written = write_batch(&db, &events, &prices).await.unwrap();
        assert_eq!(
            (written.inserted, written.duplicates),
            (3, 0),
            "{backend:?}"
        );
        // A replay of the same journal (and one new event) writes only the new one.
        let mut again = events.clone();
        again.push(event("r4", "m", "2026-11-24T12:30:00Z", 1, 1));
        let written = write_batch(&db, &again, &prices).await.unwrap();
        assert_eq!(
            (written.inserted, written.duplicates),
            (1, 3),
            "{backend:?}"
        );

        let rows = usage_event::Entity::find().all(&db).await.unwrap();
        let cost = |id: &str| {
            rows.iter()
                .find(|r| r.request_id == id)
                .unwrap()
                .cost_micros
        };
        assert_eq!(
            cost("r1"),
            450,
            "old price: 1000 × 0.15 + 500 × 0.60 = 450 µ"
        );
        assert_eq!(cost("r2"), 2000, "new price from 12:00: 1000 × 1 + 500 × 2");
        assert_eq!(cost("r3"), 0, "no price, no cost");
        assert_eq!(cost("r4"), 3, "1 × 1 + 1 × 2 = 3 µ");
        assert_eq!(rows.len(), 4);

        // Rollups sum the events exactly, hourly and daily.
        let raw = rows.iter().fold((0, 0, 0, 0), |s, r| {
            (
                s.0 + 1,
                s.1 + r.prompt_tokens,
                s.2 + r.completion_tokens,
                s.3 + r.cost_micros,
            )
        });
        for rollup in ROLLUPS {
            let g = rollup.granularity;
            assert_eq!(rollup_sums(&db, g).await, raw, "{backend:?} {g}");
        }
        let hours = usage_rollup::Entity::find()
            .filter(usage_rollup::Column::Granularity.eq("hour"))
            .filter(usage_rollup::Column::Model.eq("m"))
            .all(&db)
            .await
            .unwrap();
        assert_eq!(hours.len(), 2, "11:00 and 12:00 buckets");
    }
}

/// Wait until the server's ledger has `n` events for these request ids; returns them.
async fn recorded(db: &DatabaseConnection, ids: &[String]) -> Vec<usage_event::Model> {
    let started = std::time::Instant::now();
    loop {
        let rows = usage_event::Entity::find()
            .filter(usage_event::Column::RequestId.is_in(ids.iter().cloned()))
            .all(db)
            .await
            .unwrap_or_default();
        if rows.len() >= ids.len() {
            return rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {} of {} events recorded",
            rows.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request_id(res: &reqwest::Response) -> String {
    res.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn every_admitted_request_is_recorded_once_with_the_usage_its_client_saw() {
    let models = standard_models()
        .into_iter()
        .filter(|m| m.id == CHAT || m.id == LLAMA || m.id == BERT)
        .collect();
    let (app, _server) = spawn_custom(test_config_on(models, &TestDb::Sqlite.fresh_url())).await;
    let db = app.db().await;
    let mut told: Vec<(String, i64, i64, &str)> = Vec::new();

    // Chat, non-streaming, with an end user.
    let res = app
        .post(
            "/v1/chat/completions",
            &super::chat(CHAT, json!({"max_tokens": 5, "user": "bob"})),
        )
        .await;
    let id = request_id(&res);
    let body: Value = res.json().await.unwrap();
    let u = &body["usage"];
    told.push((
        id,
        u["prompt_tokens"].as_i64().unwrap(),
        u["completion_tokens"].as_i64().unwrap(),
        "ok",
    ));

    // Chat, streaming with the usage chunk.
    let res = app
        .post(
            "/v1/chat/completions",
            &super::chat(
                CHAT,
                json!({"max_tokens": 7, "stream": true,
                "stream_options": {"include_usage": true}}),
            ),
        )
        .await;
    let id = request_id(&res);
    let events = parse_sse(&res.text().await.unwrap());
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let u = &usage["usage"];
    told.push((
        id,
        u["prompt_tokens"].as_i64().unwrap(),
        u["completion_tokens"].as_i64().unwrap(),
        "ok",
    ));

    // Completions with two prompts, and embeddings.
    let res = app
        .post(
            "/v1/completions",
            &json!({"model": CHAT, "prompt": ["one", "two"], "max_tokens": 3, "temperature": 0}),
        )
        .await;
    let id = request_id(&res);
    let body: Value = res.json().await.unwrap();
    let u = &body["usage"];
    told.push((
        id,
        u["prompt_tokens"].as_i64().unwrap(),
        u["completion_tokens"].as_i64().unwrap(),
        "ok",
    ));
    let res = app
        .post(
            "/v1/embeddings",
            &json!({"model": BERT, "input": ["a cat", "a dog"]}),
        )
        .await;
    let id = request_id(&res);
    let body: Value = res.json().await.unwrap();
    told.push((
        id,
        body["usage"]["prompt_tokens"].as_i64().unwrap(),
        0,
        "ok",
    ));

    // Refused after admission by the engine (prompt longer than the context): recorded, no tokens.
    let long_prompt = "word ".repeat(2000);
    let res = app
        .post(
            "/v1/completions",
            &json!({"model": CHAT, "prompt": long_prompt, "max_tokens": 3}),
        )
        .await;
    assert_eq!(res.status(), 400);
    told.push((request_id(&res), 0, 0, "error"));

    // Refused before admission (bad input): not a usage event.
    let res = app
        .post(
            "/v1/chat/completions",
            &json!({"model": CHAT, "messages": []}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let unrecorded = request_id(&res);

    // A client that goes away mid-stream: recorded as cancelled with what the engine did.
    let body = json!({"model": LLAMA, "stream": true, "max_tokens": 480, "temperature": 0,
        "messages": [{"role": "user", "content": "count"}]});
    let res = app.post("/v1/chat/completions", &body).await;
    let gone = request_id(&res);
    let mut chunks = res.bytes_stream();
    chunks.next().await.unwrap().unwrap();
    chunks.next().await.unwrap().unwrap();
    drop(chunks);

    let mut ids: Vec<String> = told.iter().map(|t| t.0.clone()).collect();
    ids.push(gone.clone());
    let rows = recorded(&db, &ids).await;
    for (id, prompt, completion, status) in &told {
        let row = rows.iter().find(|r| &r.request_id == id).unwrap();
        assert_eq!(
            (
                row.prompt_tokens,
                row.completion_tokens,
                row.status.as_str()
            ),
            (*prompt, *completion, *status),
            "{id}"
        );
        assert_eq!(row.total_tokens, prompt + completion);
        assert!(row.finished_at >= row.started_at);
    }
    let first = rows.iter().find(|r| r.request_id == told[0].0).unwrap();
    assert_eq!(first.end_user.as_deref(), Some("bob"));
    assert_eq!(first.http_status, 200);
    assert!(!first.stream);
    let streamed = rows.iter().find(|r| r.request_id == told[1].0).unwrap();
    assert!(streamed.stream && streamed.first_token_at.is_some());
    let cancelled = rows.iter().find(|r| r.request_id == gone).unwrap();
    assert_eq!(
        (cancelled.status.as_str(), cancelled.http_status),
        ("cancelled", 499)
    );
    assert!(
        cancelled.completion_tokens >= 1 && cancelled.completion_tokens < 480,
        "charged what was generated before the client left: {}",
        cancelled.completion_tokens
    );
    let error = rows.iter().find(|r| r.request_id == told[4].0).unwrap();
    assert_eq!(error.http_status, 400);

    // Exactly once: no duplicates, nothing for the request refused before admission.
    let all = usage_event::Entity::find().all(&db).await.unwrap();
    assert!(all.iter().all(|r| r.request_id != unrecorded));
    let mut seen = std::collections::HashSet::new();
    assert!(all.iter().all(|r| seen.insert(r.request_id.clone())));
    // The rollups hold the same sums as the events.
    let raw = all.iter().fold((0, 0, 0, 0), |s, r| {
        (
            s.0 + 1,
            s.1 + r.prompt_tokens,
            s.2 + r.completion_tokens,
            s.3 + r.cost_micros,
        )
    });
    for rollup in ROLLUPS {
        let g = rollup.granularity;
        assert_eq!(rollup_sums(&db, g).await, raw, "{g}");
    }
}

#[tokio::test]
async fn with_the_ledger_off_requests_are_served_and_nothing_is_recorded() {
    for enabled in [true, false] {
        let models = standard_models()
            .into_iter()
            .filter(|m| m.id == CHAT)
            .collect();
        let mut config = test_config_on(models, &TestDb::Sqlite.fresh_url());
        config.ledger.enabled = enabled;
        config.ledger.flush_interval_ms = 20;
        let (app, _server) = spawn_custom(config).await;
        let db = app.db().await;
        let res = app
            .post(
                "/v1/chat/completions",
                &super::chat(CHAT, json!({"max_tokens": 3})),
            )
            .await;
        assert_eq!(res.status(), 200);
        let id = request_id(&res);
        res.text().await.unwrap();
        // Recorded events reach the database within a few flush intervals.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let rows = usage_event::Entity::find().all(&db).await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
        if enabled {
            assert_eq!(ids, vec![id.as_str()]);
        } else {
            assert!(ids.is_empty(), "{ids:?}");
        }
    }
}

#[tokio::test]
async fn requests_are_served_through_a_database_outage_and_every_event_lands_once() {
    for backend in TestDb::all() {
        let (url, db) = fresh_migrated(backend).await;
        let models = standard_models()
            .into_iter()
            .filter(|m| m.id == CHAT)
            .collect();
        let mut config = test_config_on(models, &url);
        config.ledger.flush_interval_ms = 20;
        let (app, _server) = spawn_custom(config).await;
        let tenant = tenants::insert_tenant(&db, "outage", &Actor::cli())
            .await
            .unwrap();
        let key = aiaas_admin::keys::insert_key(
            &db,
            aiaas_admin::keys::NewKey {
                tenant_id: tenant.id,
                ..Default::default()
            },
            &Actor::cli(),
        )
        .await
        .unwrap();
        let app = app.with_key(Some(secrecy::ExposeSecret::expose_secret(&key.secret)));
        let hello = super::chat(CHAT, json!({"max_tokens": 2}));
        assert_eq!(app.post("/v1/chat/completions", &hello).await.status(), 200);

        // Take the database away from the server.
        let name = url.rsplit('/').next().unwrap().to_string();
        let blocker = outage_start(backend, &db, &url, &name).await;
        let mut ids = Vec::new();
        for _ in 0..10 {
            let res = app.post("/v1/chat/completions", &hello).await;
            assert_eq!(res.status(), 200, "{backend:?}: served during the outage");
            ids.push(request_id(&res));
        }
        outage_end(backend, blocker, &url, &name).await;

        let db = connect(&url).await;
        let rows = recorded(&db, &ids).await;
        assert_eq!(rows.len(), 10, "{backend:?}");
        let all = usage_event::Entity::find().all(&db).await.unwrap();
        assert_eq!(all.len(), 11, "{backend:?}: each event exactly once");
    }
}

/// What keeps the database away: a SQLite connection holding the write lock, or PostgreSQL
/// refusing connections to the test database.
enum Outage {
    Sqlite(sea_orm::DatabaseTransaction),
    Postgres,
}

async fn outage_start(backend: TestDb, db: &DatabaseConnection, url: &str, name: &str) -> Outage {
    match backend {
        TestDb::Sqlite => {
            use sea_orm::TransactionTrait;
            let _ = url;
            let txn = db.begin().await.unwrap();
            txn.execute_unprepared("UPDATE tenants SET id = id WHERE 0")
                .await
                .unwrap();
            Outage::Sqlite(txn)
        }
        TestDb::Postgres => {
            let admin = admin_connection().await;
            for sql in [
                format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"),
                format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ),
            ] {
                admin.execute_unprepared(&sql).await.unwrap();
            }
            Outage::Postgres
        }
    }
}

async fn outage_end(backend: TestDb, outage: Outage, _url: &str, name: &str) {
    // Long enough for the writer to have failed at least once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match (backend, outage) {
        (_, Outage::Sqlite(txn)) => txn.rollback().await.unwrap(),
        (_, Outage::Postgres) => {
            let admin = admin_connection().await;
            admin
                .execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
                .await
                .unwrap();
        }
    }
}

async fn admin_connection() -> DatabaseConnection {
    let url = std::env::var("TEST_DATABASE_URL").unwrap();
    sea_orm::Database::connect(url.as_str()).await.unwrap()
}

#[tokio::test]
async fn kill_9_loses_no_event_the_journal_had() {
    let backend = TestDb::default_backend();
    let (url, db) = fresh_migrated(backend).await;
    let tenant = tenants::insert_tenant(&db, "crash", &Actor::cli())
        .await
        .unwrap();
    let key = aiaas_admin::keys::insert_key(
        &db,
        aiaas_admin::keys::NewKey {
            tenant_id: tenant.id,
            ..Default::default()
        },
        &Actor::cli(),
    )
    .await
    .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key.secret).to_string();
    let env = [(
        "AIAAS__LEDGER__JOURNAL_DIR",
        fresh_journal_dir().display().to_string(),
    )];
    let mut server = spawn_process(&url, &env, &key).await;
    let hello = super::chat(CHAT, json!({"max_tokens": 2}));

    // With the database away, the events exist only in the journal when the server is killed.
    let name = url.rsplit('/').next().unwrap().to_string();
    let outage = outage_start(backend, &db, &url, &name).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let res = server.app.post("/v1/chat/completions", &hello).await;
        assert_eq!(res.status(), 200);
        ids.push(request_id(&res));
    }
    server.kill_9();
    outage_end(backend, outage, &url, &name).await;
    let db = connect(&url).await;
    let before = usage_event::Entity::find()
        .filter(usage_event::Column::RequestId.is_in(ids.iter().cloned()))
        .all(&db)
        .await
        .unwrap()
        .len();
    assert_eq!(before, 0, "nothing reached the database before the kill");

    // Restart on the same journal: every event is written, once.
    let _again = spawn_process(&url, &env, &key).await;
    let rows = recorded(&db, &ids).await;
    assert_eq!(rows.len(), 20);
    assert_eq!(
        usage_event::Entity::find().all(&db).await.unwrap().len(),
        20
    );
}

#[tokio::test]
async fn exports_total_to_the_rollups_and_the_raw_events_to_the_last_unit() {
    use super::auth::aiaas;
    for backend in TestDb::all() {
        let (url, db) = fresh_migrated(backend).await;
        let run = async |args: &[&str]| {
            let (ok, out, err) = aiaas(args, &url, None).await;
            assert!(ok, "{backend:?} aiaas {args:?}: {err}");
            out
        };
        // Prices come from the CLI; a price cannot start in the past.
        run(&["price", "set", "m", "--input", "0.15", "--output", "0.6"]).await;
        let (ok, _, err) = aiaas(
            &[
                "price",
                "set",
                "m",
                "--input",
                "1",
                "--output",
                "1",
                "--from",
                "2020-01-01",
            ],
            &url,
            None,
        )
        .await;
        assert!(!ok && err.contains("cannot start in the past"), "{err}");
        assert!(run(&["price", "list"])
            .await
            .contains("m\t0.150000\t0.600000\t"));

        let prices = aiaas_admin::prices::list_prices(&db).await.unwrap();
        let now = Utc::now();
        let tenant = tenants::insert_tenant(&db, "stmt", &Actor::cli())
            .await
            .unwrap();
        let mut events = Vec::new();
        for i in 0..40 {
            let mut e = event(
                &format!("x{i}"),
                "m",
                "2026-11-24T00:00:00Z",
                1000 + i,
                333 * i,
            );
            e.tenant_id = Some(tenant.id);
            e.started_at = now;
            e.finished_at = now;
            e.end_user = Some(if i % 2 == 0 { "a, \"quoted\"" } else { "b" }.into());
            e.status = if i % 10 == 0 { "error" } else { "ok" }.into();
            events.push(e);
        }
        write_batch(&db, &events, &prices).await.unwrap();
        let raw = usage_event::Entity::find().all(&db).await.unwrap();
        let raw_cost: i64 = raw.iter().map(|r| r.cost_micros).sum();
        let raw_prompt: i64 = raw.iter().map(|r| r.prompt_tokens).sum();
        assert!(raw_cost > 0);
        let (_, rolled_prompt, _, rolled_cost) = rollup_sums(&db, "day").await;
        assert_eq!(
            (rolled_prompt, rolled_cost),
            (raw_prompt, raw_cost),
            "{backend:?}"
        );

        let today = now.format("%Y-%m-%d").to_string();
        let tomorrow = (now + chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string();
        let csv = run(&[
            "usage",
            "export",
            "--from",
            &today,
            "--to",
            &tomorrow,
            "--group-by",
            "day,user",
        ])
        .await;
        let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines[0],
            "day,user,requests,errors,prompt_tokens,completion_tokens,total_tokens,cost"
        );
        assert_eq!(lines.len(), 3, "{csv}");
        assert!(
            lines[1].starts_with(&format!("{today},\"a, \"\"quoted\"\"\",20,4,")),
            "{csv}"
        );
        // Money is exact: the decimal column sums to the raw micro-units.
        let cost: i64 = lines[1..]
            .iter()
            .map(|l| {
                let text = l.rsplit(',').next().unwrap();
                aiaas_admin::prices::parse_micros(text).unwrap()
            })
            .sum();
        assert_eq!(cost, raw_cost, "{backend:?}");
        let json: Value = serde_json::from_str(
            &run(&[
                "usage",
                "export",
                "--from",
                &today,
                "--to",
                &tomorrow,
                "--group-by",
                "model",
                "--format",
                "json",
            ])
            .await,
        )
        .unwrap();
        assert_eq!(json[0]["cost_micros"], raw_cost);
        assert_eq!(json[0]["requests"], 40);
        assert_eq!(json[0]["errors"], 4);
        assert_eq!(json[0]["prompt_tokens"], raw_prompt);

        // The monthly statement: one row per model and a total equal to the raw events.
        let month = now.format("%Y-%m").to_string();
        let statement = run(&["usage", "statement", "--tenant", "stmt", "--month", &month]).await;
        let total = statement
            .split("\r\n")
            .find(|l| l.starts_with("TOTAL,"))
            .unwrap();
        let cost = aiaas_admin::prices::format_micros(raw_cost);
        assert!(
            total.starts_with("TOTAL,40,4,") && total.ends_with(&cost),
            "{statement}"
        );
        let html = run(&[
            "usage",
            "statement",
            "--tenant",
            "stmt",
            "--month",
            &month,
            "--format",
            "html",
        ])
        .await;
        assert!(
            html.starts_with("<!doctype html>") && html.contains(&cost),
            "{html}"
        );

        // The reconcile check passes, and catches a rollup that drifted from its events.
        let reconcile = ["usage", "reconcile", "--from", &today, "--to", &tomorrow];
        assert!(run(&reconcile)
            .await
            .contains("rollups equal their raw events"));
        let bump = |delta: i64| {
            format!("UPDATE usage_rollups SET prompt_tokens = prompt_tokens + {delta} WHERE granularity = 'hour'")
        };
        db.execute_unprepared(&bump(1)).await.unwrap();
        let (ok, out, _) = aiaas(&reconcile, &url, None).await;
        assert!(!ok && out.starts_with("hour\t"), "{out}");
        db.execute_unprepared(&bump(-1)).await.unwrap();

        // Pruning raw events leaves every rollup, so exports do not change.
        assert!(run(&["usage", "prune", "--before", &tomorrow])
            .await
            .contains("deleted 40 raw event"));
        assert!(usage_event::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .is_empty());
        let after = run(&[
            "usage",
            "export",
            "--from",
            &today,
            "--to",
            &tomorrow,
            "--group-by",
            "day,user",
        ])
        .await;
        assert_eq!(after, csv, "{backend:?}");
    }
}

#[tokio::test]
async fn the_usage_api_reports_the_ledger_per_tenant_in_openai_shape() {
    let models = standard_models()
        .into_iter()
        .filter(|m| m.id == CHAT || m.id == BERT)
        .collect();
    let (app, _server) = spawn_custom(test_config_on(models, &TestDb::Sqlite.fresh_url())).await;
    let db = app.db().await;
    aiaas_admin::prices::insert_price(&db, CHAT, 150_000, 600_000, None, &Actor::cli())
        .await
        .unwrap();
    let mut keys = Vec::new();
    for name in ["usage-a", "usage-b"] {
        let tenant = tenants::insert_tenant(&db, name, &Actor::cli())
            .await
            .unwrap();
        let key = aiaas_admin::keys::insert_key(
            &db,
            aiaas_admin::keys::NewKey {
                tenant_id: tenant.id,
                ..Default::default()
            },
            &Actor::cli(),
        )
        .await
        .unwrap();
        keys.push(secrecy::ExposeSecret::expose_secret(&key.secret).to_string());
    }
    let a = app.with_key(Some(&keys[0]));
    let b = app.with_key(Some(&keys[1]));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let res = a
            .post(
                "/v1/chat/completions",
                &super::chat(CHAT, json!({"max_tokens": 3})),
            )
            .await;
        ids.push(request_id(&res));
    }
    let res = a
        .post("/v1/embeddings", &json!({"model": BERT, "input": "hello"}))
        .await;
    ids.push(request_id(&res));
    let rows = recorded(&db, &ids).await;
    let chat: Vec<_> = rows.iter().filter(|r| r.model == CHAT).collect();
    let input: i64 = chat.iter().map(|r| r.prompt_tokens).sum();
    let output: i64 = chat.iter().map(|r| r.completion_tokens).sum();
    let cost: i64 = rows.iter().map(|r| r.cost_micros).sum();
    assert!(cost > 0);

    let start = (Utc::now() - chrono::Duration::hours(2)).timestamp();
    let sum = |page: &Value, field: &str| -> i64 {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["results"].as_array().unwrap())
            .map(|r| r[field].as_i64().unwrap())
            .sum()
    };
    for width in ["1m", "1h", "1d"] {
        let limit = if width == "1m" { "200" } else { "3" };
        let (status, page) = a
            .get_json(&format!(
                "/v1/organization/usage/completions?start_time={start}&bucket_width={width}&group_by=model&limit={limit}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["object"], "page");
        assert_eq!(sum(&page, "input_tokens"), input, "{width}");
        assert_eq!(sum(&page, "output_tokens"), output, "{width}");
        assert_eq!(sum(&page, "num_model_requests"), 3, "{width}");
        let result = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["results"].as_array().unwrap())
            .next()
            .unwrap();
        assert_eq!(result["object"], "organization.usage.completions.result");
        assert_eq!(result["model"], CHAT);
    }
    let (_, page) = a
        .get_json(&format!(
            "/v1/organization/usage/embeddings?start_time={start}&bucket_width=1h"
        ))
        .await;
    assert_eq!(sum(&page, "num_model_requests"), 1);
    let (_, page) = a
        .get_json(&format!(
            "/v1/organization/costs?start_time={start}&bucket_width=1d"
        ))
        .await;
    let micros: i64 = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap())
        .map(|r| r["amount"]["value_micros"].as_i64().unwrap())
        .sum();
    assert_eq!(micros, cost);
    // Pages: two minute buckets at a time, with a cursor to the next.
    let (_, page) = a
        .get_json(&format!(
            "/v1/organization/usage/completions?start_time={start}&bucket_width=1m&limit=2"
        ))
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    let next = page["next_page"].as_str().unwrap().to_string();
    assert_eq!(
        next.parse::<i64>().unwrap(),
        page["data"][1]["end_time"].as_i64().unwrap()
    );
    // Another tenant sees none of it; bad parameters are refused by name.
    let (_, page) = b
        .get_json(&format!(
            "/v1/organization/usage/completions?start_time={start}&bucket_width=1h"
        ))
        .await;
    assert_eq!(sum(&page, "num_model_requests"), 0);
    let (status, body) = a
        .get_json("/v1/organization/usage/completions?bucket_width=1h")
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("start_time"))
    );
    let (status, body) = a
        .get_json(&format!(
            "/v1/organization/usage/completions?start_time={start}&bucket_width=1w"
        ))
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("bucket_width"))
    );
    assert_eq!(
        app.with_key(None)
            .get("/v1/organization/costs")
            .await
            .status(),
        401
    );

    // A tenant names only itself; an operator token names any tenant, and runs no model.
    let path = format!("/v1/organization/usage/completions?start_time={start}&bucket_width=1h");
    let (status, _) = b.get_json(&format!("{path}&tenant=usage-a")).await;
    assert_eq!(status, 403);
    let (status, page) = a.get_json(&format!("{path}&tenant=usage-a")).await;
    assert_eq!((status, sum(&page, "num_model_requests")), (200, 3));
    let token = aiaas_admin::jwt_keys::mint_operator_token(
        &db,
        "finance-bot",
        chrono::Duration::minutes(10),
        &Actor::cli(),
    )
    .await
    .unwrap();
    let operator = app.with_key(Some(&token));
    let (status, page) = operator.get_json(&format!("{path}&tenant=usage-a")).await;
    assert_eq!((status, sum(&page, "num_model_requests")), (200, 3));
    let (status, body) = operator.get_json(&path).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("tenant"))
    );
    let res = operator
        .post(
            "/v1/chat/completions",
            &super::chat(CHAT, json!({"max_tokens": 1})),
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_graceful_shutdown_under_load_writes_every_event_before_it_returns() {
    let models = standard_models()
        .into_iter()
        .filter(|m| m.id == LLAMA)
        .collect();
    let db_url = TestDb::default_backend().fresh_url();
    let (app, server) = spawn_custom(test_config_on(models, &db_url)).await;
    let handle = server.handle();
    let running = tokio::spawn(server.run_until_stopped());
    let body = json!({"model": LLAMA, "stream": true, "max_tokens": 200, "temperature": 0,
        "messages": [{"role": "user", "content": "count"}]});
    let mut streams = Vec::new();
    for _ in 0..8 {
        let res = app.post("/v1/chat/completions", &body).await;
        assert_eq!(res.status(), 200);
        streams.push(res);
    }
    // Stop while all eight are streaming: they finish, then the server drains and returns.
    let stop = tokio::spawn(async move { handle.stop(true).await });
    let mut ids = Vec::new();
    for res in streams {
        ids.push(request_id(&res));
        let text = res.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"));
    }
    stop.await.unwrap();
    running.await.unwrap().unwrap();
    // No waiting: returning from `run_until_stopped` means the ledger was drained.
    let db = connect(&db_url).await;
    let rows = usage_event::Entity::find()
        .filter(usage_event::Column::RequestId.is_in(ids.iter().cloned()))
        .all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows
        .iter()
        .all(|r| r.status == "ok" && r.completion_tokens == 200));
}
