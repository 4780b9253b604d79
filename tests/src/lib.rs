//! Test harness: tiny model fixtures (generated once, cached) and `spawn_app`, which starts the
//! real server on 127.0.0.1:0 with real models and returns a client for it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use aiaas_server::config::Config;
use aiaas_server::engine::{ModelKind, ModelSpec};
use aiaas_server::Application;

/// Ids of the models every shared test server serves.
pub const CHAT: &str = "tiny-qwen3";
pub const LLAMA: &str = "tiny-llama";
pub const GGUF: &str = "tiny-llama-gguf";
pub const EMBED: &str = "tiny-qwen3-embedding";
pub const BERT: &str = "tiny-bert";
/// tiny-qwen3's weights with a chat template that renders tools.
pub const TOOLS: &str = "tiny-qwen3-tools";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory of generated tiny models: `AIAAS_TEST_MODELS` if set (the test script sets it),
/// else generated into the cache with the project's own generator.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("AIAAS_TEST_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target").join("tiny-models"));
        let python = std::env::var_os("AIAAS_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
        let status = std::process::Command::new(&python)
            .arg(workspace_root().join("tests/fixtures/make_models.py"))
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} to make test models ({e}); run `make test`",
                    python.display()
                )
            });
        assert!(status.success(), "generating tiny models failed");
        dir
    })
}

/// The model table of the standard test server.
pub fn standard_models() -> Vec<ModelSpec> {
    let dir = fixtures();
    let spec = |id: &str, path: PathBuf, kind: Option<ModelKind>| ModelSpec {
        id: id.into(),
        source: path.to_string_lossy().into_owned(),
        kind,
        chat_template: None,
        dtype: None,
        max_seq_len: None,
    };
    vec![
        spec(CHAT, dir.join("tiny-qwen3"), None),
        spec(LLAMA, dir.join("tiny-llama"), Some(ModelKind::Chat)),
        spec(GGUF, dir.join("tiny-llama.gguf"), None),
        spec(EMBED, dir.join("tiny-qwen3-embedding"), None),
        spec(BERT, dir.join("tiny-bert"), None),
        ModelSpec {
            chat_template: Some(
                dir.join("chatml-tools.jinja")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ..spec(TOOLS, dir.join("tiny-qwen3"), None)
        },
    ]
}

/// A configuration for a test server: port 0, the given models.
pub fn test_config(models: Vec<ModelSpec>) -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.server.workers = 2;
    config.server.shutdown_timeout_secs = 10;
    config.models = models;
    config
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self.post(path, body).await;
        let status = res.status().as_u16();
        let json = res.json().await.expect("JSON body");
        (status, json)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }

    /// POST a streaming request and collect its SSE `data:` payloads (including `[DONE]`).
    pub async fn stream(&self, path: &str, body: &serde_json::Value) -> Vec<String> {
        let res = self.post(path, body).await;
        assert_eq!(res.status(), 200, "stream refused: {:?}", res.text().await);
        parse_sse(&res.text().await.expect("body"))
    }
}

pub fn parse_sse(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// The shared server with the standard models, started once per test binary on its own runtime
/// thread (so it outlives each test's runtime).
pub fn spawn_app() -> TestApp {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    let address = ADDRESS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = Application::build(test_config(standard_models()))
                    .await
                    .expect("test server starts");
                tx.send(format!("http://127.0.0.1:{}", app.port()))
                    .expect("send address");
                app.run_until_stopped().await.expect("server runs");
            });
        });
        rx.recv_timeout(Duration::from_secs(300))
            .expect("test server started")
    });
    TestApp {
        address: address.clone(),
        client: client(),
    }
}

/// A server of its own (custom limits or models), living on the calling test's runtime.
pub async fn spawn_custom(config: Config) -> (TestApp, aiaas_server::Application) {
    let app = Application::build(config)
        .await
        .expect("custom server starts");
    let test = TestApp {
        address: format!("http://127.0.0.1:{}", app.port()),
        client: client(),
    };
    (test, app)
}
