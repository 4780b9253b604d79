//! Test harness: tiny model fixtures (generated once, cached), fresh databases (a SQLite file, or
//! a PostgreSQL database when `TEST_DATABASE_URL` is set), and `spawn_app`, which starts the real
//! server on 127.0.0.1:0 with real models and returns a client that carries an API key.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use aiaas_server::config::Config;
use aiaas_server::engine::{ModelKind, ModelSpec};
use aiaas_server::Application;
use secrecy::ExposeSecret;

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
/// A JWT signing key of `tests/fixtures/jwt` (test-only keys), as PEM text.
pub fn jwt_fixture(name: &str) -> String {
    let path = workspace_root().join("tests/fixtures/jwt").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `aiaas` binary next to this test binary (built by `cargo build --workspace`).
pub fn aiaas_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("AIAAS_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    dir.join(format!("aiaas{}", std::env::consts::EXE_SUFFIX))
}

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

/// The tiny Q4_1 GGUF Llama (`tiny-llama-q4_1.gguf`) as model `id`, on the CPU: what the tests
/// of the vendored quantized kernels and engine loop load.
pub fn tiny_q4_1_gguf(id: &str) -> ModelSpec {
    ModelSpec {
        id: id.into(),
        source: fixtures()
            .join("tiny-llama-q4_1.gguf")
            .to_string_lossy()
            .into_owned(),
        kind: None,
        chat_template: None,
        dtype: None,
        max_seq_len: None,
        isq: None,
        device: Some("cpu".into()),
    }
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
        isq: None,
        device: None,
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
    test_config_on(models, &TestDb::Sqlite.fresh_url())
}

/// A test configuration on a given database (see `TestDb::fresh_url`).
pub fn test_config_on(models: Vec<ModelSpec>, database_url: &str) -> Config {
    let mut config = Config::default();
    config.database.url = database_url.to_string();
    config.database.max_connections = 4;
    config.auth.refresh_interval_ms = 100;
    config.server.bind = "127.0.0.1:0".into();
    config.server.workers = 2;
    config.server.shutdown_timeout_secs = 10;
    // Every test signs in from 127.0.0.1: the per-address limit has a test of its own.
    config.console.sign_in_per_minute = 100_000;
    config.models = models;
    config
}

#[derive(Clone)]
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The bearer credential every request carries (`None`: no Authorization header).
    pub key: Option<String>,
    /// The database the server uses, for tests that arrange data through the control plane.
    pub database_url: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The same server, called with another credential (or none).
    pub fn with_key(&self, key: Option<&str>) -> TestApp {
        TestApp {
            key: key.map(str::to_string),
            ..self.clone()
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// A request to `path` carrying this app's credential.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorize(self.client.request(method, self.url(path)))
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.authorize(self.client.post(self.url(path)))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.authorize(self.client.get(self.url(path)))
            .send()
            .await
            .expect("request sent")
    }

    /// A connection to the server's database.
    pub async fn db(&self) -> sea_orm::DatabaseConnection {
        connect(&self.database_url).await
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
        let res = self.get(path).await;
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
    static SHARED: OnceLock<(String, String, String)> = OnceLock::new();
    let (address, key, database_url) = SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let db = TestDb::default_backend().fresh_url();
                let mut config = test_config_on(standard_models(), &db);
                own_journal(&mut config);
                let app = Application::build(config)
                    .await
                    .expect("test server starts");
                let key = app
                    .first_key()
                    .expect("a fresh database gets a first key")
                    .expose_secret()
                    .to_string();
                tx.send((format!("http://127.0.0.1:{}", app.port()), key, db))
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
        key: Some(key.clone()),
        database_url: database_url.clone(),
    }
}

/// Start a server of its own (in the calling test's runtime) with `config`.
pub async fn spawn_custom(mut config: Config) -> (TestApp, aiaas_server::Application) {
    own_journal(&mut config);
    let database_url = config.database.url.clone();
    let app = Application::build(config)
        .await
        .expect("custom server starts");
    let test = TestApp {
        address: format!("http://127.0.0.1:{}", app.port()),
        client: client(),
        key: app.first_key().map(|k| k.expose_secret().to_string()),
        database_url,
    };
    (test, app)
}

/// Every server gets a journal directory of its own (a journal is locked by its server), unless
/// the test chose one.
fn own_journal(config: &mut Config) {
    if config.ledger.journal_dir == aiaas_admin::ledger::LedgerSettings::default().journal_dir {
        config.ledger.journal_dir = fresh_journal_dir();
    }
}

/// A new, empty directory for one server's usage journal.
pub fn fresh_journal_dir() -> PathBuf {
    scratch_dir().join(format!("journal-{}", uuid::Uuid::new_v4().simple()))
}

/// The databases a test can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDb {
    Sqlite,
    Postgres,
}

impl TestDb {
    /// SQLite always; PostgreSQL too when `TEST_DATABASE_URL` is set.
    pub fn all() -> Vec<TestDb> {
        let mut all = vec![TestDb::Sqlite];
        if postgres_admin_url().is_some() {
            all.push(TestDb::Postgres);
        }
        all
    }

    /// PostgreSQL when `TEST_DATABASE_URL` is set, else SQLite.
    pub fn default_backend() -> TestDb {
        if postgres_admin_url().is_some() {
            TestDb::Postgres
        } else {
            TestDb::Sqlite
        }
    }

    /// The URL of a new, empty database (not migrated: the server or the test migrates it).
    pub fn fresh_url(self) -> String {
        match self {
            TestDb::Sqlite => {
                let path = scratch_dir().join(format!("{}.db", uuid::Uuid::new_v4().simple()));
                format!("sqlite://{}", path.display())
            }
            TestDb::Postgres => {
                drop_old_postgres_databases();
                let admin = postgres_admin_url().expect("TEST_DATABASE_URL is set");
                let name = format!("aiaas_test_{}", uuid::Uuid::new_v4().simple());
                let statement = format!("CREATE DATABASE \"{name}\"");
                let url = with_database_name(&admin, &name);
                run_blocking(async move {
                    use sea_orm::ConnectionTrait;
                    let conn = sea_orm::Database::connect(admin.as_str())
                        .await
                        .expect("TEST_DATABASE_URL reachable");
                    conn.execute_unprepared(&statement)
                        .await
                        .expect("create test database");
                    conn.close().await.ok();
                });
                url
            }
        }
    }
}

/// Once per test process: drop the databases earlier runs created.
fn drop_old_postgres_databases() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Some(admin) = postgres_admin_url() else {
            return;
        };
        run_blocking(async move {
            use sea_orm::{ConnectionTrait, Statement};
            let conn = sea_orm::Database::connect(admin.as_str())
                .await
                .expect("TEST_DATABASE_URL reachable");
            let rows = conn
                .query_all(Statement::from_string(
                    conn.get_database_backend(),
                    "SELECT datname FROM pg_database WHERE datname LIKE 'aiaas_test_%'",
                ))
                .await
                .unwrap_or_default();
            for row in rows {
                if let Ok(name) = row.try_get::<String>("", "datname") {
                    let _ = conn
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                }
            }
            conn.close().await.ok();
        });
    });
}

fn postgres_admin_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// `postgres://user@host:port/db?x` with `db` replaced.
fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Run a future to completion on a runtime of its own (callable from sync and async code).
fn run_blocking<F: std::future::Future<Output = ()> + Send + 'static>(fut: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .join()
    .expect("blocking task");
}

/// A directory for this test process's SQLite files; earlier runs' directories are removed.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("aiaas-test-db");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// Connect to a test database.
pub async fn connect(url: &str) -> sea_orm::DatabaseConnection {
    let settings = aiaas_admin::db::DatabaseSettings {
        url: url.to_string(),
        max_connections: 2,
        min_connections: 0,
        ..Default::default()
    };
    aiaas_admin::db::connect(&settings)
        .await
        .expect("test database reachable")
}

/// A fresh, migrated database of the given kind, and a connection to it.
pub async fn fresh_migrated(db: TestDb) -> (String, sea_orm::DatabaseConnection) {
    let url = db.fresh_url();
    let conn = connect(&url).await;
    aiaas_admin::db::migrate(&conn)
        .await
        .expect("migrations apply");
    (url, conn)
}

/// An `aiaas serve` process of its own (a replica), killed when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    pub app: TestApp,
}

impl ServerProcess {
    /// SIGKILL: no shutdown, no drain.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Start the `aiaas` binary on `database_url` with the tiny chat model and `env`
/// (`AIAAS__SECTION__KEY` settings); returns once `/ready` answers. `key` is the credential its
/// `TestApp` carries.
pub async fn spawn_process(database_url: &str, env: &[(&str, String)], key: &str) -> ServerProcess {
    let port = free_port();
    let model = format!("{CHAT}={}", fixtures().join("tiny-qwen3").display());
    let mut command = std::process::Command::new(aiaas_bin());
    command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--database-url", database_url, "--model", &model])
        .env("AIAAS__AUTH__REFRESH_INTERVAL_MS", "100")
        .env("AIAAS__LEDGER__JOURNAL_DIR", fresh_journal_dir())
        .env("AIAAS__SERVER__WORKERS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("aiaas binary starts");
    let process = ServerProcess {
        child,
        app: TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client: client(),
            key: Some(key.to_string()),
            database_url: database_url.to_string(),
        },
    };
    let started = std::time::Instant::now();
    loop {
        if let Ok(res) = process
            .app
            .client
            .get(process.app.url("/ready"))
            .send()
            .await
        {
            if res.status() == 200 {
                return process;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "aiaas process did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` of the test's own on a free port (no persistence), stopped when dropped.
/// `None` when the machine has no `redis-server` (unless `AIAAS_REQUIRE_REDIS` is set, as CI
/// does: then its absence fails the test).
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
}

impl RedisServer {
    pub async fn start() -> Option<RedisServer> {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Option<RedisServer> {
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                assert!(
                    std::env::var_os("AIAAS_REQUIRE_REDIS").is_none(),
                    "redis-server is required (AIAAS_REQUIRE_REDIS) but cannot start: {err}"
                );
                eprintln!("skipped: redis-server is not installed ({err})");
                return None;
            }
        };
        let server = RedisServer { child, port };
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stop it now (the port stays free for `start_on`).
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
