#![allow(clippy::unwrap_used)]
//! Black-box tests of the HTTP API: the real server, real mistral.rs and candle models (tiny,
//! generated), real HTTP. Random weights: assert structure and counts, never wording.

mod auth;
mod console;
mod ledger;
mod limits;

use aiaas_tests::*;
use base64::Engine as _;
use serde_json::{json, Value};

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say this is a test"}],
        "max_tokens": 6,
        "temperature": 0,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

/// The `index`-th embedding of an embeddings response, as floats.
fn vector(response: &Value, index: usize) -> Vec<f64> {
    response["data"][index]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

async fn prompt_token_count(app: &TestApp, model: &str, body: &Value) -> u64 {
    let (status, tok) = app
        .post_json(
            "/tokenize",
            &json!({"model": model, "messages": body["messages"]}),
        )
        .await;
    assert_eq!(status, 200, "{tok}");
    tok["count"].as_u64().unwrap()
}

// ---------- models, health, metrics ----------

#[tokio::test]
async fn models_list_every_loaded_model_and_get_one() {
    let app = spawn_app();
    let (status, list) = app.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![CHAT, LLAMA, GGUF, EMBED, BERT, TOOLS]);
    for m in list["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "aiaas");
        assert!(m["created"].as_u64().unwrap() > 1_700_000_000);
    }
    let (status, one) = app.get_json(&format!("/v1/models/{EMBED}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], EMBED);
    assert_eq!(one["kind"], "embedding");
    let (status, missing) = app.get_json("/v1/models/nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_model_call() {
    let app = spawn_app();
    let (status, health) = app.get_json("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["device"], "cpu");
    assert_eq!(ready["limits"], "local");
    assert_eq!(ready["flash_attention"], false);
    let models = ready["models"].as_array().unwrap();
    assert_eq!(models.len(), 6);
    for m in models {
        // Paged attention (and with it a KV-cache size) is a GPU matter; the CPU says so.
        assert_eq!(m["device"], "cpu", "{m}");
        assert_eq!(m["paged_attention"], false, "{m}");
        assert!(m["kv_cache"].is_null(), "{m}");
        assert_eq!(m["prefix_cache"], false, "{m}");
        // mistral.rs models report the dtype they compute in; the BERT embedder has no engine.
        let dtype = m["dtype"].as_str();
        if m["id"] == BERT {
            assert_eq!(dtype, None, "{m}");
        } else {
            assert!(["f32", "bf16", "f16"].contains(&dtype.unwrap_or("")), "{m}");
        }
    }

    app.post_json(
        "/v1/chat/completions",
        &chat(CHAT, json!({"max_tokens": 2})),
    )
    .await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("aiaas_requests_total{model=\"tiny-qwen3\",route=\"/v1/chat/completions\",status=\"200\"}"), "{text}");
    assert!(text.contains("aiaas_request_duration_seconds_bucket"));
    assert!(text.contains("aiaas_tokens_total{direction=\"completion\",model=\"tiny-qwen3\"}"));
    assert!(text.contains("aiaas_running_sequences{model=\"tiny-qwen3\"}"));
    assert!(text.contains("aiaas_queue_depth{model=\"tiny-qwen3\"}"));
    // The engine's own scheduler figures (this server is shared: the values belong to others
    // too; prefix_cache_hits_show_in_ready_and_metrics checks them on a server of its own).
    for series in [
        "aiaas_engine_sequences{model=\"tiny-qwen3\",state=\"running\"}",
        "aiaas_engine_sequences{model=\"tiny-qwen3\",state=\"waiting\"}",
        "aiaas_engine_sequences_total{model=\"tiny-qwen3\"}",
        "aiaas_prefix_cache_hits_total{model=\"tiny-qwen3\"}",
        "aiaas_prefix_cache_hit_tokens_total{model=\"tiny-qwen3\"}",
    ] {
        assert!(metric(&text, series).is_some(), "no {series} in {text}");
    }
    assert!(metric(&text, "aiaas_engine_sequences_total{model=\"tiny-qwen3\"}").unwrap() >= 1.0);
    // Without paged attention there is no KV-cache block figure to report.
    assert!(!text.contains("aiaas_kv_cache_blocks{"), "{text}");
}

/// The value of one sample line of a Prometheus text page (`name{labels}` as written there).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `/metrics` once `model`'s engine has no sequence running. The engine's figures are
/// refreshed between its steps, so a response can arrive before the step that produced it is
/// counted: poll (bounded) for the engine to settle.
async fn settled_metrics(app: &TestApp, model: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let running = format!("aiaas_engine_sequences{{model=\"{model}\",state=\"running\"}}");
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        if metric(&text, &running) == Some(0.0) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// POST every body to `path` at once (a task each, so the engine can batch them); the answers
/// in the bodies' order.
async fn post_at_once(app: &TestApp, path: &'static str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let app = app.clone();
            tokio::spawn(async move { app.post_json(path, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn prefix_cache_hits_show_in_ready_and_metrics() {
    let mut config = test_config(vec![standard_models().remove(1)]);
    config.engine.prefix_cache_entries = Some(16);
    let (app, _server) = spawn_custom(config).await;
    let (_, ready) = app.get_json("/ready").await;
    assert_eq!(ready["models"][0]["prefix_cache"], true, "{ready}");
    // A conversation's next turn: the second prompt extends the first. (An identical prompt
    // is not a hit: mistral.rs needs at least one new token to compute.)
    let first = "the same long prefix, word after word, ".repeat(4);
    let second = format!("{first} and one more question");
    for prompt in [&first, &second] {
        let body = json!({"model": LLAMA, "prompt": prompt, "max_tokens": 3, "temperature": 0});
        let (status, v) = app.post_json("/v1/completions", &body).await;
        assert_eq!(status, 200, "{v}");
    }
    let text = settled_metrics(&app, "tiny-llama").await;
    let get = |series: &str| metric(&text, series).unwrap_or(-1.0);
    assert_eq!(
        get("aiaas_engine_sequences{model=\"tiny-llama\",state=\"running\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        get("aiaas_engine_sequences_total{model=\"tiny-llama\"}"),
        2.0,
        "{text}"
    );
    // The second request found the first one's prompt in the cache.
    assert_eq!(
        get("aiaas_prefix_cache_hits_total{model=\"tiny-llama\"}"),
        1.0,
        "{text}"
    );
    let first_tokens = {
        let (_, v) = app
            .post_json("/tokenize", &json!({"model": LLAMA, "prompt": first}))
            .await;
        v["count"].as_f64().unwrap()
    };
    let hit = get("aiaas_prefix_cache_hit_tokens_total{model=\"tiny-llama\"}");
    assert!(
        hit >= first_tokens - 2.0 && hit <= first_tokens + 3.0,
        "{hit} cached tokens for a {first_tokens}-token first prompt: {text}"
    );
}

// ---------- chat ----------

#[tokio::test]
async fn chat_completion_has_openai_shape_and_exact_usage_on_every_backend() {
    let app = spawn_app();
    for model in [CHAT, LLAMA, GGUF] {
        let body = chat(model, json!({}));
        let (status, r) = app.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{model}: {r}");
        assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["model"], model);
        assert!(r["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
        assert!(r["created"].as_u64().unwrap() > 1_700_000_000);
        let choice = &r["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(choice["message"]["content"].is_string());
        assert!(choice["logprobs"].is_null());
        let usage = &r["usage"];
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert!((1..=6).contains(&completion), "{usage}");
        assert_eq!(
            choice["finish_reason"],
            if completion == 6 { "length" } else { "stop" }
        );
        assert_eq!(
            usage["prompt_tokens"].as_u64().unwrap(),
            prompt_token_count(&app, model, &body).await
        );
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + completion
        );
    }
}

#[tokio::test]
async fn greedy_decoding_is_deterministic_and_max_completion_tokens_wins() {
    let app = spawn_app();
    let (_, a) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 8})),
        )
        .await;
    let (_, b) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 8})),
        )
        .await;
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    let (_, c) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 8, "max_completion_tokens": 2})),
        )
        .await;
    assert_eq!(c["usage"]["completion_tokens"], 2);
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    let (_, one) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 1})),
        )
        .await;
    assert_eq!(one["usage"]["completion_tokens"], 1);
}

#[tokio::test]
async fn seed_makes_sampling_reproducible_and_n_gives_distinct_choices() {
    // A server of its own, one request at a time: batch composition changes float results
    // slightly, so a seed reproduces a sample when the batches are the same (as in vLLM).
    let (app, _server) = spawn_custom(test_config(vec![standard_models().remove(0)])).await;
    let texts = |r: &Value| -> Vec<String> {
        r["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_string())
            .collect()
    };
    let body = chat(
        CHAT,
        json!({"temperature": 1.0, "seed": 42, "max_tokens": 8}),
    );
    let (s1, a) = app.post_json("/v1/chat/completions", &body).await;
    let (s2, b) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!((s1, s2), (200, 200), "{a}");
    assert_eq!(texts(&a), texts(&b));
    let (_, other) = app
        .post_json(
            "/v1/chat/completions",
            &chat(
                CHAT,
                json!({"temperature": 1.0, "seed": 43, "max_tokens": 8}),
            ),
        )
        .await;
    assert_ne!(
        texts(&a),
        texts(&other),
        "another seed gave the same sample"
    );

    let (status, three) = app
        .post_json(
            "/v1/chat/completions",
            &chat(
                CHAT,
                json!({"temperature": 1.0, "seed": 42, "n": 3, "max_tokens": 8}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{three}");
    assert_eq!(
        three["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let distinct: std::collections::HashSet<_> = texts(&three).into_iter().collect();
    assert!(
        distinct.len() > 1,
        "three seeded choices were identical: {three}"
    );
    // Usage counts the prompt once and every choice's tokens.
    assert_eq!(three["usage"]["prompt_tokens"], a["usage"]["prompt_tokens"]);
    let completion = three["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((3..=24).contains(&completion), "{}", three["usage"]);
}

#[tokio::test]
async fn stop_sequences_cut_the_text_before_the_stop() {
    let app = spawn_app();
    let (_, free) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 12})),
        )
        .await;
    let text = free["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // Stop on a piece of the greedy answer: the answer must end right before it.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 4, "answer too short to test stops: {text:?}");
    let stop: String = chars[2..4].iter().collect();
    let (_, cut) = app
        .post_json(
            "/v1/chat/completions",
            &chat(
                CHAT,
                json!({"max_tokens": 12, "stop": [stop.clone(), "unlikely-zzz"]}),
            ),
        )
        .await;
    let got = cut["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        got,
        &text[..text.find(&stop).unwrap()],
        "stop {stop:?} in {text:?}"
    );
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn logprobs_are_natural_logs_with_the_requested_alternatives() {
    let app = spawn_app();
    let (status, r) = app
        .post_json(
            "/v1/chat/completions",
            &chat(
                CHAT,
                json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 4}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty());
    for entry in content {
        let lp = entry["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0 && lp > -100.0);
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert!(
            (top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-4,
            "{entry}"
        );
        assert!(entry["bytes"].is_array());
    }
}

#[tokio::test]
async fn json_schema_response_format_constrains_the_output() {
    let app = spawn_app();
    // A schema with no room for free whitespace (random weights love tabs).
    let schema = json!({"type": "string", "enum": ["yes", "no"]});
    let (status, r) = app
        .post_json("/v1/chat/completions", &chat(CHAT, json!({"max_tokens": 40,
            "response_format": {"type": "json_schema", "json_schema": {"name": "yn", "schema": schema, "strict": true}}})))
        .await;
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    let parsed: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    assert!(
        ["yes", "no"].contains(&parsed.as_str().unwrap()),
        "{parsed}"
    );
}

#[tokio::test]
async fn tools_are_refused_when_the_template_cannot_render_them() {
    let app = spawn_app();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    let (status, r) = app
        .post_json("/v1/chat/completions", &chat(CHAT, json!({"tools": tools})))
        .await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["param"], "tools");
    // tool_choice "none" means the tools are not used, so the request is served.
    let (status, _) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"tools": tools, "tool_choice": "none"})),
        )
        .await;
    assert_eq!(status, 200);
}

fn weather_tool_call_request(stream: bool) -> Value {
    // Random weights never call a tool on their own: a JSON schema makes the output exactly the
    // tool-call object the engine's parser recognises, so the tool-call path is exercised.
    let call_schema = json!({"type": "object", "properties": {
        "name": {"const": "get_weather"},
        "arguments": {"type": "object", "properties": {"city": {"const": "Paris"}}, "required": ["city"], "additionalProperties": false}},
        "required": ["name", "arguments"], "additionalProperties": false});
    chat(
        TOOLS,
        json!({"max_tokens": 60, "stream": stream,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "call", "schema": call_schema}}}),
    )
}

#[tokio::test]
async fn tool_calls_come_back_in_openai_shape() {
    let app = spawn_app();
    let (status, r) = app
        .post_json("/v1/chat/completions", &weather_tool_call_request(false))
        .await;
    assert_eq!(status, 200, "{r}");
    let choice = &r["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
    assert!(choice["message"]["content"].is_null(), "{r}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    // The template renders the tools, so the prompt is longer than without them.
    let plain = chat(TOOLS, json!({}));
    assert!(
        r["usage"]["prompt_tokens"].as_u64().unwrap()
            > prompt_token_count(&app, TOOLS, &plain).await
    );

    let events = app
        .stream("/v1/chat/completions", &weather_tool_call_request(true))
        .await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(calls[0][0]["index"], 0);
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
}

#[tokio::test]
async fn tool_results_in_history_are_rendered() {
    let app = spawn_app();
    let body = json!({"model": TOOLS, "max_tokens": 2, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ]});
    let (status, r) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{r}");
    let (_, rendered) = app
        .post_json(
            "/tokenize",
            &json!({"model": TOOLS, "messages": body["messages"]}),
        )
        .await;
    let (_, text) = app
        .post_json(
            "/detokenize",
            &json!({"model": TOOLS, "tokens": rendered["tokens"]}),
        )
        .await;
    let text = text["prompt"].as_str().unwrap();
    assert!(
        text.contains("get_weather") && text.contains("sunny"),
        "{text}"
    );
}

#[tokio::test]
async fn message_roles_and_text_parts_are_accepted() {
    let app = spawn_app();
    let body = json!({"model": CHAT, "max_tokens": 2, "messages": [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "Thanks"}
    ], "user": "end-user-7"});
    let (status, r) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{r}");
}

// ---------- streaming ----------

fn normalise_chunk(raw: &str) -> Value {
    if raw == "[DONE]" {
        return json!("[DONE]");
    }
    let mut v: Value = serde_json::from_str(raw).unwrap();
    v["id"] = json!("[id]");
    v["created"] = json!("[created]");
    if let Some(choices) = v["choices"].as_array_mut() {
        for c in choices {
            if c["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            {
                c["delta"]["content"] = json!("[text]");
            }
        }
    }
    v
}

#[tokio::test]
async fn chat_stream_transcript_matches_the_snapshot() {
    let app = spawn_app();
    let events = app
        .stream(
            "/v1/chat/completions",
            &chat(
                CHAT,
                json!({"stream": true, "max_tokens": 3, "stream_options": {"include_usage": true}}),
            ),
        )
        .await;
    let transcript: Vec<Value> = events.iter().map(|e| normalise_chunk(e)).collect();
    insta::assert_json_snapshot!("chat_stream_transcript", transcript);
}

#[tokio::test]
async fn stream_equals_non_stream_and_usage_chunk_comes_last_only_when_asked() {
    let app = spawn_app();
    let (_, full) = app
        .post_json(
            "/v1/chat/completions",
            &chat(GGUF, json!({"max_tokens": 8})),
        )
        .await;
    let events = app
        .stream(
            "/v1/chat/completions",
            &chat(
                GGUF,
                json!({"stream": true, "max_tokens": 8, "stream_options": {"include_usage": true}}),
            ),
        )
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: std::collections::HashSet<_> = chunks
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], full["usage"]);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(
        finish,
        vec![full["choices"][0]["finish_reason"].as_str().unwrap()]
    );

    let plain = app
        .stream(
            "/v1/chat/completions",
            &chat(GGUF, json!({"stream": true, "max_tokens": 3})),
        )
        .await;
    for e in &plain[..plain.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(
            v.get("usage").is_none(),
            "usage key without include_usage: {v}"
        );
        assert!(!v["choices"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn eight_concurrent_streams_all_complete_with_correct_usage() {
    let app = spawn_app();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"model": CHAT, "stream": true, "max_tokens": 5 + i, "temperature": 0,
                    "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": format!("count to {i}")}]});
                let events = app.stream("/v1/chat/completions", &body).await;
                let prompt = prompt_token_count(&app, CHAT, &body).await;
                (i, prompt, events)
            })
        })
        .collect();
    for t in tasks {
        let (i, prompt, events) = t.await.unwrap();
        assert_eq!(events.last().unwrap(), "[DONE]");
        let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        let u = &usage["usage"];
        assert_eq!(u["prompt_tokens"].as_u64().unwrap(), prompt, "stream {i}");
        let pieces = events
            .iter()
            .filter(|e| e.contains("\"content\":") && !e.contains("\"role\""))
            .count() as u64;
        let completion = u["completion_tokens"].as_u64().unwrap();
        assert!(completion >= 1 && completion <= 5 + i as u64, "{u}");
        assert!(
            pieces <= completion,
            "{pieces} pieces for {completion} tokens"
        );
    }
}

/// A request decoded in a batch with others gets exactly the tokens it gets alone: four prompts
/// of different lengths with different output limits (so batches form as shorter sequences catch
/// up, and change as they finish), at temperature 0, first one at a time, then all together,
/// twice. Upstream mistral.rs's CPU attention gave every sequence of a batch the last one's
/// attention (vendored patch item 6, vendor/mistralrs-core/AIAAS-PATCH.md).
#[tokio::test]
async fn requests_decoded_together_get_the_tokens_they_get_alone() {
    let app = spawn_app();
    let requests = [
        ("hi", 40),
        ("tell me a long story about a cat and a dog", 28),
        (
            "one two three four five six seven eight nine ten eleven twelve",
            34,
        ),
        ("why", 22),
    ];
    let body = |prompt: &str, max_tokens: u32| {
        json!({"model": GGUF, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]})
    };
    let answer = |v: &Value| {
        (
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
            v["usage"]["completion_tokens"].as_u64().unwrap(),
        )
    };
    let mut alone = Vec::new();
    for (prompt, max_tokens) in requests {
        let (status, v) = app
            .post_json("/v1/chat/completions", &body(prompt, max_tokens))
            .await;
        assert_eq!(status, 200, "{v}");
        alone.push(answer(&v));
    }
    for round in 0..2 {
        let bodies = requests.iter().map(|&(p, n)| body(p, n)).collect();
        let answers = post_at_once(&app, "/v1/chat/completions", bodies).await;
        for (i, (status, v)) in answers.into_iter().enumerate() {
            assert_eq!(status, 200, "{v}");
            assert_eq!(answer(&v), alone[i], "request {i}, round {round}");
        }
    }
    // A safetensors model batches the same way (its batched matmuls may round differently from
    // one row's, so only completion is checked there).
    let bodies = requests
        .iter()
        .map(|&(prompt, max_tokens)| {
            json!({"model": CHAT, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]})
        })
        .collect();
    for (status, v) in post_at_once(&app, "/v1/chat/completions", bodies).await {
        assert_eq!(status, 200, "{v}");
        assert!(
            v["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
            "{v}"
        );
    }
}

/// Sequences of different lengths are decoded in one batch (vendored mistral.rs, GGUF Llama
/// models: each sequence keeps its own KV cache and attends over it alone). Two requests whose
/// lengths never meet (the short one ends before it reaches the long one's prompt length),
/// sent at once: the engine's decode steps carry both (upstream's scheduler runs only
/// sequences of one length per step, so each step would decode one token), and each gets the
/// tokens it gets alone.
#[tokio::test]
async fn sequences_of_different_lengths_decode_in_one_batch() {
    let config = test_config(
        standard_models()
            .into_iter()
            .filter(|m| m.id == GGUF)
            .collect(),
    );
    let (app, _server) = spawn_custom(config).await;
    let long = "one two three four five six seven eight nine ten ".repeat(6);
    // The long request decodes far longer than the short one, so that the short one's decode
    // steps overlap it even when its prompt is admitted dozens of steps late (with 44 tokens
    // instead of 120 the overlap once fell below the bound below, in 1 run of 5).
    let requests = [(long.as_str(), 120u64), ("hi", 36)];
    let body = |prompt: &str, max_tokens: u64| json!({"model": GGUF, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0});
    let mut prompt_tokens = Vec::new();
    for (prompt, _) in requests {
        let (_, v) = app
            .post_json("/tokenize", &json!({"model": GGUF, "prompt": prompt}))
            .await;
        prompt_tokens.push(v["count"].as_u64().unwrap());
    }
    assert!(
        prompt_tokens[1] + requests[1].1 < prompt_tokens[0],
        "the lengths must never meet: {prompt_tokens:?}"
    );
    let decode = |text: &str| {
        let get = |series: &str| metric(text, &format!("{series}{{model=\"{GGUF}\"}}"));
        (
            get("aiaas_engine_decode_steps_total").unwrap(),
            get("aiaas_engine_decode_tokens_total").unwrap(),
        )
    };
    let answer = |v: &Value| {
        let text = v["choices"][0]["text"].as_str().unwrap().to_string();
        (text, v["usage"]["completion_tokens"].as_u64().unwrap())
    };
    let mut alone = Vec::new();
    for (prompt, max_tokens) in requests {
        let (status, v) = app
            .post_json("/v1/completions", &body(prompt, max_tokens))
            .await;
        assert_eq!(status, 200, "{v}");
        alone.push(answer(&v));
    }
    assert!(
        alone[1].1 >= 20 && alone[0].1 >= alone[1].1 + 60,
        "the short request must decode a while, the long one much longer: {alone:?}"
    );
    let before = decode(&settled_metrics(&app, GGUF).await);
    let bodies = requests.iter().map(|&(p, n)| body(p, n)).collect();
    let answers = post_at_once(&app, "/v1/completions", bodies).await;
    for (i, (status, v)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200, "{v}");
        assert_eq!(answer(&v), alone[i], "request {i}");
    }
    let after = decode(&settled_metrics(&app, GGUF).await);
    let (steps, tokens) = (after.0 - before.0, after.1 - before.1);
    // Every step decodes each running sequence once; steps that carried both sequences add
    // one token more than steps. The short request's ~35 decode steps overlap the long one's
    // ~120 unless its prompt was admitted more than ~80 steps late.
    assert!(
        tokens - steps >= 10.0,
        "{tokens} tokens in {steps} decode steps: the two sequences were not decoded together"
    );
}

/// The vendored mistral.rs patch is in effect: every engine thread works inside a rayon pool of
/// its own, whose helper threads are named `mistralrs-engine-N` (see
/// vendor/mistralrs-core/AIAAS-PATCH.md), and the engine answers from there.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn engines_step_inside_a_rayon_pool_of_their_own() {
    let app = spawn_app();
    let (status, body) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    // Linux keeps the first 15 bytes of a thread's name.
    assert!(
        names.iter().any(|name| name == "mistralrs-engin"),
        "no engine pool thread among {names:?}"
    );
}

#[tokio::test]
async fn dropping_a_stream_cancels_its_generation() {
    let app = spawn_app();
    let body = json!({"model": LLAMA, "stream": true, "max_tokens": 400, "temperature": 0.9, "seed": 1,
        "messages": [{"role": "user", "content": "go on forever"}]});
    let mut res = app.post("/v1/chat/completions", &body).await;
    assert_eq!(res.status(), 200);
    res.chunk().await.unwrap();
    res.chunk().await.unwrap();
    let running = |text: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with("aiaas_running_sequences{model=\"tiny-llama\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(running(&metrics), 1, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "aiaas_engine_sequences{model=\"tiny-llama\",state=\"running\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    drop(res);
    // Poll (bounded) until the engine has let the sequence go; 400 tokens would take far longer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Both our count and the engine's own scheduler let it go.
        let engine_running = metric(
            &metrics,
            "aiaas_engine_sequences{model=\"tiny-llama\",state=\"running\"}",
        );
        if running(&metrics) == 0 && engine_running == Some(0.0) {
            assert!(metrics.contains("aiaas_requests_total{model=\"tiny-llama\",route=\"/v1/chat/completions\",status=\"499\"}"), "{metrics}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sequence still running after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// ---------- completions ----------

#[tokio::test]
async fn completions_number_choices_prompt_major_and_sum_usage() {
    let app = spawn_app();
    let (status, r) = app
        .post_json("/v1/completions", &json!({"model": CHAT, "prompt": ["one two", "three"], "n": 2, "max_tokens": 3, "temperature": 0}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(r["object"], "text_completion");
    let mut idx: Vec<u64> = r["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2, 3]);
    let p1 = app
        .post_json("/tokenize", &json!({"model": CHAT, "prompt": "one two"}))
        .await
        .1["count"]
        .as_u64()
        .unwrap();
    let p2 = app
        .post_json("/tokenize", &json!({"model": CHAT, "prompt": "three"}))
        .await
        .1["count"]
        .as_u64()
        .unwrap();
    assert_eq!(r["usage"]["prompt_tokens"].as_u64().unwrap(), p1 + p2);
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= 12);
}

#[tokio::test]
async fn completions_default_to_16_tokens_and_stream_with_usage() {
    let app = spawn_app();
    let (_, r) = app
        .post_json(
            "/v1/completions",
            &json!({"model": LLAMA, "prompt": "The quick brown", "temperature": 0}),
        )
        .await;
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    let events = app
        .stream(
            "/v1/completions",
            &json!({"model": LLAMA, "prompt": "The quick brown", "temperature": 0, "stream": true,
            "stream_options": {"include_usage": true}}),
        )
        .await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, r["choices"][0]["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["usage"], r["usage"]);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
}

#[tokio::test]
async fn completion_logprobs_use_the_legacy_shape() {
    let app = spawn_app();
    let (status, r) = app
        .post_json("/v1/completions", &json!({"model": CHAT, "prompt": "Hello", "max_tokens": 3, "temperature": 0, "logprobs": 2}))
        .await;
    assert_eq!(status, 200, "{r}");
    let lp = &r["choices"][0]["logprobs"];
    let n = lp["tokens"].as_array().unwrap().len();
    assert!(n >= 1);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), n);
    assert_eq!(lp["text_offset"].as_array().unwrap().len(), n);
    assert_eq!(
        lp["top_logprobs"][0].as_object().unwrap().len().min(2),
        lp["top_logprobs"][0].as_object().unwrap().len()
    );
}

// ---------- embeddings ----------

#[tokio::test]
async fn embeddings_are_unit_vectors_in_float_and_base64() {
    let app = spawn_app();
    for (model, dims) in [(EMBED, 64usize), (BERT, 32usize)] {
        let (status, f) = app
            .post_json(
                "/v1/embeddings",
                &json!({"model": model, "input": ["hello world", "a quick fox"]}),
            )
            .await;
        assert_eq!(status, 200, "{f}");
        assert_eq!(f["object"], "list");
        assert_eq!(f["model"], model);
        let data = f["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        let v: Vec<f64> = data[0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), dims);
        assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-3);
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);
        assert!(f["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        assert_eq!(f["usage"]["total_tokens"], f["usage"]["prompt_tokens"]);

        let (_, b) = app
            .post_json(
                "/v1/embeddings",
                &json!({"model": model, "input": "hello world", "encoding_format": "base64"}),
            )
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(decoded.len(), dims);
        for (a, b) in decoded.iter().zip(&v) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }
}

#[tokio::test]
async fn embeddings_accept_token_ids_matching_the_text() {
    let app = spawn_app();
    for model in [EMBED, BERT] {
        let tokens = app
            .post_json(
                "/tokenize",
                &json!({"model": model, "prompt": "hello world"}),
            )
            .await
            .1["tokens"]
            .clone();
        let (_, by_text) = app
            .post_json(
                "/v1/embeddings",
                &json!({"model": model, "input": "hello world"}),
            )
            .await;
        let (s1, by_ids) = app
            .post_json("/v1/embeddings", &json!({"model": model, "input": tokens}))
            .await;
        let (s2, nested) = app
            .post_json(
                "/v1/embeddings",
                &json!({"model": model, "input": [tokens.clone(), tokens]}),
            )
            .await;
        assert_eq!((s1, s2), (200, 200), "{by_ids} {nested}");
        let a: Vec<f64> = vector(&by_text, 0);
        let b: Vec<f64> = vector(&by_ids, 0);
        let cos: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.999, "{model}: cos {cos}");
        assert_eq!(nested["data"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn embedding_inputs_are_not_padded_or_truncated_by_the_tokenizer_config() {
    // The tiny BERT's tokenizer.json pads to 128 like all-MiniLM-L6-v2's: padding must not
    // leak into token counts or into mean pooling.
    let app = spawn_app();
    let (_, t) = app
        .post_json(
            "/tokenize",
            &json!({"model": BERT, "prompt": "hello world"}),
        )
        .await;
    assert!(t["count"].as_u64().unwrap() <= 6, "{t}");
    let (_, e) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": BERT, "input": ["hello world", "the quick brown fox jumps"]}),
        )
        .await;
    let a: Vec<f64> = vector(&e, 0);
    let b: Vec<f64> = vector(&e, 1);
    let (_, alone) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": BERT, "input": "hello world"}),
        )
        .await;
    let c: Vec<f64> = vector(&alone, 0);
    // Batched with a longer input (padded per batch, masked) equals embedded alone.
    let diff = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-4, "batch padding changed the embedding by {diff}");
    assert!(a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() < 0.999);
    assert!(
        e["usage"]["prompt_tokens"].as_u64().unwrap() < 20,
        "{}",
        e["usage"]
    );
    let long = "hello ".repeat(200);
    let (status, err) = app
        .post_json("/v1/embeddings", &json!({"model": BERT, "input": long}))
        .await;
    assert_eq!(status, 400, "{err}");
}

#[tokio::test]
async fn dimensions_truncate_where_allowed_and_are_refused_elsewhere() {
    let app = spawn_app();
    let (status, r) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": "hi", "dimensions": 16}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let v: Vec<f64> = vector(&r, 0);
    assert_eq!(v.len(), 16);
    assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-3);
    let (status, r) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": BERT, "input": "hi", "dimensions": 16}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(r["error"]["param"], "dimensions");
    let (status, _) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": "hi", "dimensions": 65}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn one_token_inputs_to_qwen3_embedding_get_a_400_and_the_model_keeps_serving() {
    // mistral.rs 0.8.1's Qwen3-Embedding panics on a one-token sequence, taking the model's
    // engine thread (and everyone's requests on it) down; the engine refuses them first.
    let app = spawn_app();
    let (_, t) = app
        .post_json("/tokenize", &json!({"model": EMBED, "prompt": "a"}))
        .await;
    assert_eq!(t["count"], 1, "{t}");
    for input in [json!("a"), json!(["hello world", "a"]), json!([[42]])] {
        let (status, err) = app
            .post_json("/v1/embeddings", &json!({"model": EMBED, "input": input}))
            .await;
        assert_eq!(status, 400, "{input}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert_eq!(err["error"]["param"], "input", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at least 2 tokens"),
            "{err}"
        );
    }
    let (status, ok) = app
        .post_json(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": ["hello world", "a b"]}),
        )
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["data"].as_array().unwrap().len(), 2);
    // The BERT model has no such limit.
    let (status, _) = app
        .post_json("/v1/embeddings", &json!({"model": BERT, "input": [[42]]}))
        .await;
    assert_eq!(status, 200);
}

// ---------- tokenize ----------

#[tokio::test]
async fn tokenize_and_detokenize_round_trip() {
    let app = spawn_app();
    let (status, t) = app
        .post_json(
            "/tokenize",
            &json!({"model": CHAT, "prompt": "Hello, world!"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        t["count"].as_u64().unwrap() as usize,
        t["tokens"].as_array().unwrap().len()
    );
    assert_eq!(t["max_model_len"], 512);
    let (_, d) = app
        .post_json(
            "/detokenize",
            &json!({"model": CHAT, "tokens": t["tokens"]}),
        )
        .await;
    assert_eq!(d["prompt"], "Hello, world!");
    // Chat input is rendered with the ChatML template.
    let (_, c) = app
        .post_json(
            "/tokenize",
            &json!({"model": CHAT, "messages": [{"role": "user", "content": "Hello, world!"}]}),
        )
        .await;
    let (_, rendered) = app
        .post_json(
            "/detokenize",
            &json!({"model": CHAT, "tokens": c["tokens"]}),
        )
        .await;
    assert_eq!(
        rendered["prompt"],
        "<|im_start|>user\nHello, world!<|im_end|>\n<|im_start|>assistant\n"
    );
}

// ---------- errors ----------

async fn error_of(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = app
        .request(method, path)
        .header("content-type", "application/json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let v: Value = res.json().await.unwrap();
    let e = &v["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error without `{key}`: {v}");
    }
    (status, v)
}

#[tokio::test]
async fn every_error_is_an_openai_error_object() {
    let app = spawn_app();
    let post = reqwest::Method::POST;
    let cases: Vec<(&str, u16, Value)> = vec![
        ("bad_json", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some("{not json")).await.1),
        ("not_an_object", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some("[1,2]")).await.1),
        ("missing_model", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"messages":[]}"#)).await.1),
        ("wrong_type", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#)).await.1),
        ("empty_messages", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[]}"#)).await.1),
        ("bad_role", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"robot","content":"x"}]}"#)).await.1),
        ("image_part", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#)).await.1),
        ("temperature_range", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":"x"}],"temperature":3}"#)).await.1),
        ("unsupported_param", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":"x"}],"logit_bias":{"5":1}}"#)).await.1),
        ("unknown_param", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":"x"}],"frobnicate":true}"#)).await.1),
        ("stream_options_without_stream", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#)).await.1),
        ("too_many_n", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-qwen3","messages":[{"role":"user","content":"x"}],"n":99}"#)).await.1),
        ("unknown_model", 404, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#)).await.1),
        ("embedding_model_for_chat", 400, error_of(&app, post.clone(), "/v1/chat/completions", Some(r#"{"model":"tiny-bert","messages":[{"role":"user","content":"x"}]}"#)).await.1),
        ("chat_model_for_embeddings", 400, error_of(&app, post.clone(), "/v1/embeddings", Some(r#"{"model":"tiny-qwen3","input":"x"}"#)).await.1),
        ("bad_encoding_format", 400, error_of(&app, post.clone(), "/v1/embeddings", Some(r#"{"model":"tiny-bert","input":"x","encoding_format":"hex"}"#)).await.1),
        ("echo_unsupported", 400, error_of(&app, post.clone(), "/v1/completions", Some(r#"{"model":"tiny-qwen3","prompt":"x","echo":true}"#)).await.1),
        ("unknown_route", 404, error_of(&app, post.clone(), "/v1/nothing-here", Some("{}")).await.1),
        ("wrong_method", 405, error_of(&app, reqwest::Method::GET, "/v1/chat/completions", None).await.1),
    ];
    for (name, status, body) in &cases {
        let (got, _) = (status, body);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
        let _ = got;
    }
    let snapshot: Vec<Value> = cases
        .into_iter()
        .map(|(name, status, body)| json!({"case": name, "status": status, "body": body}))
        .collect();
    insta::assert_json_snapshot!("error_bodies", snapshot);
}

#[tokio::test]
async fn error_statuses_are_the_documented_ones() {
    let app = spawn_app();
    let (s, _) = error_of(
        &app,
        reqwest::Method::POST,
        "/v1/chat/completions",
        Some("{oops"),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = error_of(
        &app,
        reqwest::Method::POST,
        "/v1/chat/completions",
        Some(r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = error_of(&app, reqwest::Method::DELETE, "/v1/models", None).await;
    assert_eq!(s, 405);
    let (s, _) = error_of(&app, reqwest::Method::GET, "/nope", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn prompt_longer_than_the_context_is_a_400_before_streaming() {
    let app = spawn_app();
    let long = "the quick brown fox ".repeat(200);
    for stream in [false, true] {
        let body = json!({"model": CHAT, "stream": stream, "messages": [{"role": "user", "content": long}]});
        let res = app.post("/v1/chat/completions", &body).await;
        assert_eq!(res.status(), 400, "stream={stream}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    }
    let (status, v) = app
        .post_json("/v1/embeddings", &json!({"model": BERT, "input": long}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

// ---------- limits and shutdown (servers of their own) ----------

#[tokio::test]
async fn configured_limits_are_enforced_before_the_engine() {
    let mut config = test_config(vec![standard_models().remove(0)]);
    config.limits.max_body_bytes = 2048;
    config.limits.max_messages = 2;
    config.limits.max_batch_inputs = 2;
    let (app, _server) = spawn_custom(config).await;
    let big = json!({"model": CHAT, "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, v) = app.post_json("/v1/chat/completions", &big).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "request_too_large");
    let many = json!({"model": CHAT, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]});
    let (status, v) = app.post_json("/v1/chat/completions", &many).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "messages");
    let (status, v) = app
        .post_json(
            "/v1/completions",
            &json!({"model": CHAT, "prompt": ["a", "b", "c"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "prompt");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let config = test_config(vec![standard_models().remove(0)]);
    let (app, server) = spawn_custom(config).await;
    let handle = server.handle();
    let running = tokio::spawn(server.run_until_stopped());
    let body = json!({"model": CHAT, "stream": true, "max_tokens": 40, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]});
    let mut res = app.post("/v1/chat/completions", &body).await;
    assert_eq!(res.status(), 200);
    res.chunk().await.unwrap();
    let stopping = tokio::spawn(async move { handle.stop(true).await });
    let mut rest = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        rest.ends_with("data: [DONE]\n\n"),
        "in-flight stream was cut: {rest}"
    );
    stopping.await.unwrap();
    running.await.unwrap().unwrap();
    assert!(
        app.client.get(app.url("/health")).send().await.is_err(),
        "still accepting after stop"
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let mut config = test_config(vec![standard_models().remove(0)]);
    config.engine.max_queued_requests = 1;
    let (app, _server) = spawn_custom(config).await;
    let long = json!({"model": CHAT, "stream": true, "max_tokens": 300, "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut first = app.post("/v1/chat/completions", &long).await;
    assert_eq!(first.status(), 200);
    first.chunk().await.unwrap();
    let res = app
        .post("/v1/chat/completions", &chat(CHAT, json!({})))
        .await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "server_overloaded");
}

#[tokio::test]
async fn isq_quantises_a_safetensors_model_at_load_and_is_refused_for_gguf() {
    let mut spec = standard_models().remove(0);
    spec.isq = Some("q8_0".into());
    let (app, _server) = spawn_custom(test_config(vec![spec])).await;
    let (status, r) = app
        .post_json(
            "/v1/chat/completions",
            &chat(CHAT, json!({"max_tokens": 4, "temperature": 0})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(
        r["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{r}"
    );

    let gguf = standard_models()
        .into_iter()
        .find(|m| m.id == GGUF)
        .unwrap();
    let config = aiaas_engine::EngineConfig {
        device: "cpu".into(),
        ..Default::default()
    };
    for (isq, expected) in [
        ("q8_0", "isq applies to safetensors models"),
        ("q9_9", "isq applies to safetensors models"),
    ] {
        let spec = aiaas_engine::ModelSpec {
            isq: Some(isq.into()),
            ..gguf.clone()
        };
        let err = aiaas_engine::Engine::load(config.clone(), vec![spec])
            .await
            .err()
            .expect("a GGUF model with isq must not load");
        assert!(err.to_string().contains(expected), "{err}");
    }
    let mut unknown = standard_models().remove(0);
    unknown.isq = Some("q9_9".into());
    let err = aiaas_engine::Engine::load(config, vec![unknown])
        .await
        .err()
        .expect("an unknown isq type must not load");
    assert!(err.to_string().contains("isq `q9_9`"), "{err}");
}

#[tokio::test]
async fn a_models_max_seq_len_caps_prompt_and_completion() {
    let mut spec = standard_models().remove(0);
    spec.max_seq_len = Some(40);
    let (app, _server) = spawn_custom(test_config(vec![spec])).await;
    let (_, model) = app.get_json(&format!("/v1/models/{CHAT}")).await;
    assert_eq!(model["max_model_len"], 40);
    // A 23-token prompt leaves 17 tokens for the answer, whatever max_tokens says.
    let body = json!({"model": CHAT, "max_tokens": 100, "temperature": 0,
        "messages": [{"role": "user", "content": "Say this is a test"}]});
    let (status, r) = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{r}");
    let prompt = r["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = r["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(prompt + completion <= 40, "{}", r["usage"]);
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    let long = json!({"model": CHAT, "messages": [{"role": "user", "content": "the quick brown fox ".repeat(10)}]});
    let (status, e) = app.post_json("/v1/chat/completions", &long).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "context_length_exceeded");
}
