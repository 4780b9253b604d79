//! The admin console, handler by handler over real HTTP: sign-in, sessions, CSRF, roles,
//! tenant isolation (404), escaping, security headers, keys, exports, languages.

use std::time::Duration;

use aiaas_admin::audit::Actor;
use aiaas_admin::entity::{api_key, audit_log};
use aiaas_admin::users::{NewUser, Role};
use aiaas_tests::*;
use reqwest::header::HeaderMap;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// A browser: a cookie jar, no automatic redirects.
struct Browser {
    client: reqwest::Client,
    base: String,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a CSRF field") + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Self::with_language(app, "en-US,en;q=0.9")
    }

    fn with_language(app: &TestApp, accept_language: &str) -> Browser {
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", accept_language.parse().unwrap());
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .default_headers(headers)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: app.address.clone(),
        }
    }

    async fn read(res: reqwest::Response) -> Page {
        Page {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        Self::read(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Self::read(
            self.client
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn sign_in_with(&self, email: &str, password: &str) -> Page {
        let form = self.get("/admin/login").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post(
            "/admin/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/admin/dashboard"),
            ],
        )
        .await
    }

    async fn sign_in(app: &TestApp, email: &str) -> Browser {
        let browser = Browser::new(app);
        let res = browser.sign_in_with(email, PASSWORD).await;
        assert_eq!(res.status, 303, "sign-in of {email}: {}", res.body);
        browser
    }

    /// The session's CSRF token (from any signed-in page).
    async fn csrf(&self) -> String {
        self.get("/admin/account").await.csrf()
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A tenant with a tenant admin and a finance user; returns (tenant id, admin, finance).
async fn tenant_with_users(app: &TestApp) -> (i64, String, String) {
    let db = app.db().await;
    let name = unique("t");
    let tenant = aiaas_admin::tenants::insert_tenant(&db, &name, &Actor::cli())
        .await
        .unwrap();
    let admin = user(app, Role::TenantAdmin, Some(tenant.id)).await;
    let finance = user(app, Role::Finance, Some(tenant.id)).await;
    (tenant.id, admin, finance)
}

async fn user(app: &TestApp, role: Role, tenant_id: Option<i64>) -> String {
    let db = app.db().await;
    let email = format!("{}@example.com", unique(role.as_str()));
    aiaas_admin::users::insert_user(
        &db,
        NewUser {
            email: email.clone(),
            password: SecretString::from(PASSWORD),
            role,
            tenant_id,
        },
        &Actor::cli(),
    )
    .await
    .unwrap();
    email
}

/// Create a key through the console; returns (public id, full key).
async fn create_key(browser: &Browser, query: &str, name: &str) -> (String, String) {
    let csrf = browser.csrf().await;
    let res = browser
        .post(
            &format!("/admin/keys{query}"),
            &[
                ("csrf", &csrf),
                ("name", name),
                ("models", ""),
                ("expires", ""),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let marker = "id=\"secret\" value=\"";
    let start = res.body.find(marker).expect("the secret is shown") + marker.len();
    let end = res.body[start..].find('"').unwrap() + start;
    let key = res.body[start..end].to_string();
    let public_id = key
        .strip_prefix("sk-aiaas-")
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    (public_id, key)
}

async fn models_status(app: &TestApp, key: &str) -> u16 {
    app.with_key(Some(key))
        .get("/v1/models")
        .await
        .status()
        .as_u16()
}

/// Poll until `/v1/models` with `key` answers `want` (the auth cache refreshes every 100 ms).
async fn wait_for_status(app: &TestApp, key: &str, want: u16) {
    let started = std::time::Instant::now();
    loop {
        let got = models_status(app, key).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_session_that_rotates_and_ends_on_sign_out() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::new(&app);

    // Not signed in: every page sends you to the sign-in page, and back afterwards.
    let res = browser.get("/admin/keys?q=x").await;
    assert_eq!(res.status, 303);
    assert_eq!(res.location(), "/admin/login?next=/admin/keys%3Fq%3Dx");

    let wrong = browser
        .sign_in_with(&admin, "not the password at all")
        .await;
    assert_eq!(wrong.status, 401);
    let unknown = browser
        .sign_in_with("nobody@example.com", "not the password at all")
        .await;
    assert_eq!(unknown.status, 401);
    // One message for every refusal: no hint whether the account exists.
    let message = "Incorrect e-mail or password";
    assert!(wrong.body.contains(message) && unknown.body.contains(message));

    let ok = browser.sign_in_with(&admin, PASSWORD).await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.location(), "/admin/dashboard");
    let cookie = ok
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("aiaas_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    assert_eq!(browser.get("/admin/dashboard").await.status, 200);

    // A second sign-in gets a different token.
    let again = Browser::new(&app);
    let second = again.sign_in_with(&admin, PASSWORD).await;
    let token = |p: &Page| {
        p.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("aiaas_session="))
            .unwrap()
    };
    assert_ne!(token(&ok), token(&second));

    // Sign out: the session is gone on the server, not just in this browser.
    let csrf = browser.csrf().await;
    let out = browser.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(browser.get("/admin/dashboard").await.status, 303);
    assert_eq!(again.get("/admin/dashboard").await.status, 200);
}

#[tokio::test]
async fn sign_in_needs_its_csrf_cookie_and_locks_an_account_after_five_wrong_passwords() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::new(&app);
    // No CSRF cookie or field: refused before the password is looked at.
    let res = browser
        .post("/admin/login", &[("email", &admin), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status, 403);
    browser.get("/admin/login").await;
    let res = browser
        .post(
            "/admin/login",
            &[
                ("email", &admin),
                ("password", PASSWORD),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(res.status, 403);

    for _ in 0..5 {
        assert_eq!(
            browser
                .sign_in_with(&admin, "wrong password!!")
                .await
                .status,
            401
        );
    }
    // Locked: even the right password is refused, with the same message.
    let locked = browser.sign_in_with(&admin, PASSWORD).await;
    assert_eq!(locked.status, 401);
    assert!(locked.body.contains("Incorrect e-mail or password"));
    let db = app.db().await;
    let row = aiaas_admin::users::find_user_by_email(&db, &admin)
        .await
        .unwrap()
        .unwrap();
    assert!(row.locked_until.is_some());
    let events = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("user.locked"))
        .filter(audit_log::Column::ObjectId.eq(row.id.to_string()))
        .count(&db)
        .await
        .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn sign_in_attempts_from_one_address_are_limited() {
    let mut config = test_config(standard_models());
    config.console.sign_in_per_minute = 3;
    let (app, server) = spawn_custom(config).await;
    let (_, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::new(&app);
    for _ in 0..3 {
        assert_eq!(
            browser
                .sign_in_with(&admin, "wrong password!!")
                .await
                .status,
            401
        );
    }
    let res = browser.sign_in_with(&admin, PASSWORD).await;
    assert_eq!(res.status, 429);
    assert!(res.body.contains("Too many sign-in attempts"));
    server.handle().stop(true).await;
}

#[tokio::test]
async fn every_page_answers_each_role_as_it_should_with_security_headers() {
    let app = spawn_app();
    let (tenant, admin, finance) = tenant_with_users(&app).await;
    let operator = user(&app, Role::Operator, None).await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let pages = [
        "/admin/dashboard",
        "/admin/dashboard?range=7d",
        "/admin/dashboard?range=30d",
        "/admin/keys",
        "/admin/keys/new",
        "/admin/jwt-keys",
        "/admin/usage",
        "/admin/usage?group=model&errors=1",
        "/admin/usage/export.csv",
        "/admin/statements",
        "/admin/tenants",
        "/admin/prices",
        "/admin/users",
        "/admin/audit",
        "/admin/account",
    ];
    // (role, pages it may not see)
    let matrix: [(&str, &[&str]); 3] = [
        (&operator, &[]),
        (&admin, &["/admin/tenants", "/admin/prices"]),
        (
            &finance,
            &[
                "/admin/keys",
                "/admin/keys/new",
                "/admin/jwt-keys",
                "/admin/tenants",
                "/admin/prices",
                "/admin/users",
                "/admin/audit",
            ],
        ),
    ];
    for (email, hidden) in matrix {
        let browser = Browser::sign_in(&app, email).await;
        for page in pages {
            // Operators pick the tenant of tenant pages.
            let path = if email == operator
                && (page.starts_with("/admin/keys") || page == "/admin/jwt-keys")
            {
                format!("{page}?tenant={tenant}")
            } else {
                page.to_string()
            };
            let res = browser.get(&path).await;
            let want = if hidden.contains(&page) { 404 } else { 200 };
            assert_eq!(res.status, want, "{email} GET {path}: {}", res.body);
            let h = |name: &str| {
                res.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let csp = h("content-security-policy").unwrap();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
                "{csp}"
            );
            assert!(csp.contains("frame-ancestors 'none'"));
            assert_eq!(h("x-frame-options").as_deref(), Some("DENY"));
            assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"));
            assert!(h("referrer-policy").is_some());
            if want == 200 && !path.contains(".csv") {
                assert!(res.body.contains("<html"), "{path} is a page");
                assert!(!res.body.contains("<script>"), "no inline script in {path}");
            }
            if want == 404 {
                assert!(res.body.contains("Not found"), "the console's own 404 page");
            }
        }
        let statement = format!("/admin/statements/{month}/print");
        let want = if email == operator { 404 } else { 200 };
        assert_eq!(
            browser.get(&statement).await.status,
            want,
            "{email} {statement}"
        );
    }
    // Unknown console paths are the console's HTML 404, not the API's JSON.
    let browser = Browser::sign_in(&app, &admin).await;
    let res = browser.get("/admin/no-such-page").await;
    assert_eq!(res.status, 404);
    assert!(res.body.contains("<html"));
}

#[tokio::test]
async fn another_tenants_objects_are_not_found_and_stay_untouched() {
    let app = spawn_app();
    let (tenant_a, admin_a, _) = tenant_with_users(&app).await;
    let (tenant_b, admin_b, finance_b) = tenant_with_users(&app).await;
    let a = Browser::sign_in(&app, &admin_a).await;
    let b = Browser::sign_in(&app, &admin_b).await;
    let (b_key, b_secret) = create_key(&b, "", "b's key").await;
    let csrf = a.csrf().await;
    let db = app.db().await;
    let b_user = aiaas_admin::users::find_user_by_email(&db, &finance_b)
        .await
        .unwrap()
        .unwrap();

    for path in [
        format!("/admin/keys/{b_key}"),
        format!("/admin/keys/{b_key}/revoke"),
        format!("/admin/keys?tenant={tenant_b}"),
        format!("/admin/jwt-keys?tenant={tenant_b}"),
        format!("/admin/usage?tenant={tenant_b}"),
        format!("/admin/dashboard?tenant={tenant_b}"),
        format!("/admin/statements/2026-11/csv?tenant={tenant_b}"),
    ] {
        assert_eq!(a.get(&path).await.status, 404, "GET {path}");
    }
    for (path, form) in [
        (format!("/admin/keys/{b_key}/revoke"), vec![]),
        (format!("/admin/keys/{b_key}/rotate"), vec![("grace", "0")]),
        (
            format!("/admin/keys/{b_key}/edit"),
            vec![("name", "mine now")],
        ),
        (format!("/admin/keys/{b_key}/limits"), vec![("rpm", "1")]),
        (format!("/admin/keys/{b_key}/token"), vec![("ttl", "600")]),
        (
            format!("/admin/keys?tenant={tenant_b}"),
            vec![("name", "planted")],
        ),
        (
            format!("/admin/users/{}/disabled", b_user.id),
            vec![("value", "1")],
        ),
    ] {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        assert_eq!(a.post(&path, &fields).await.status, 404, "POST {path}");
    }
    // Nothing changed: b's key works and keeps its name; no key was planted in b.
    assert_eq!(models_status(&app, &b_secret).await, 200);
    let key = aiaas_admin::keys::find_key(&db, &b_key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.name, "b's key");
    assert!(key.rpm_limit.is_none() && key.revoked_at.is_none());
    let planted = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_b))
        .filter(api_key::Column::Name.eq("planted"))
        .count(&db)
        .await
        .unwrap();
    assert_eq!(planted, 0);
    let b_user = aiaas_admin::users::find_user_by_email(&db, &finance_b)
        .await
        .unwrap()
        .unwrap();
    assert!(b_user.disabled_at.is_none());
    // a's own list does not show b's key.
    assert!(!a.get("/admin/keys").await.body.contains(&b_key));
    assert!(a.get("/admin/keys").await.status == 200 && tenant_a != tenant_b);
}

#[tokio::test]
async fn state_changing_forms_need_the_sessions_csrf_token() {
    let app = spawn_app();
    let (tenant, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::sign_in(&app, &admin).await;
    let (public_id, key) = create_key(&browser, "", "keep me").await;
    let other = Browser::sign_in(&app, &admin).await;
    let foreign_csrf = other.csrf().await;
    let db = app.db().await;
    let count = || async {
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant))
            .count(&db)
            .await
            .unwrap()
    };
    let before = count().await;
    for csrf in [None, Some("wrong"), Some(foreign_csrf.as_str())] {
        let mut create = vec![("name", "sneaky")];
        let mut revoke = vec![];
        if let Some(c) = csrf {
            create.push(("csrf", c));
            revoke.push(("csrf", c));
        }
        assert_eq!(browser.post("/admin/keys", &create).await.status, 403);
        let res = browser
            .post(&format!("/admin/keys/{public_id}/revoke"), &revoke)
            .await;
        assert_eq!(res.status, 403);
        assert!(res.body.contains("Request refused"));
        assert_eq!(browser.post("/admin/logout", &revoke).await.status, 403);
    }
    assert_eq!(count().await, before);
    assert_eq!(models_status(&app, &key).await, 200);
}

#[tokio::test]
async fn a_key_created_in_the_console_is_shown_once_works_and_is_refused_once_revoked() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::sign_in(&app, &admin).await;
    let csrf = browser.csrf().await;
    let res = browser
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("name", "billing service"),
                ("models", &format!("{CHAT}, {EMBED}")),
                ("expires", "2099-01-31"),
                ("rpm", "1,000"),
                ("tpm", ""),
                ("max_concurrent", "4"),
            ],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["cache-control"], "no-store");
    let (public_id, key) = {
        let marker = "id=\"secret\" value=\"";
        let start = res.body.find(marker).unwrap() + marker.len();
        let end = res.body[start..].find('"').unwrap() + start;
        let key = res.body[start..end].to_string();
        (key[9..21].to_string(), key)
    };
    assert_eq!(models_status(&app, &key).await, 200);
    // The allowlist and limits took effect.
    let chat = app
        .with_key(Some(&key))
        .post("/v1/chat/completions", &json!({"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}))
        .await;
    assert_eq!(chat.status(), 403);
    let db = app.db().await;
    let row = aiaas_admin::keys::find_key(&db, &public_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.rpm_limit, row.tpm_limit, row.max_concurrent),
        (Some(1000), None, Some(4))
    );
    assert!(row.expires_at.is_some());

    // Never shown again: neither on the key's page nor in the list.
    let page = browser.get(&format!("/admin/keys/{public_id}")).await;
    assert_eq!(page.status, 200);
    // `sk-aiaas-` + 12-character public id + `-`: the rest is the secret (base64url, may hold `-`).
    let secret_part = &key[22..];
    assert!(!page.body.contains(secret_part));
    let list = browser.get("/admin/keys?q=billing").await;
    assert!(list.body.contains("billing service") && !list.body.contains(secret_part));
    assert!(!browser
        .get("/admin/keys?q=nomatch")
        .await
        .body
        .contains("billing service"));

    // Revoke: a confirmation page, then the key is refused.
    let confirm = browser
        .get(&format!("/admin/keys/{public_id}/revoke"))
        .await;
    assert_eq!(confirm.status, 200);
    let res = browser
        .post(
            &format!("/admin/keys/{public_id}/revoke"),
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(res.location(), format!("/admin/keys/{public_id}"));
    let after = browser.get(res.location()).await;
    assert!(
        after.body.contains("The key was revoked."),
        "flash after redirect"
    );
    wait_for_status(&app, &key, 401).await;
    // The flash shows once.
    assert!(!browser
        .get(res.location())
        .await
        .body
        .contains("The key was revoked."));
    let audit = audit_log::Entity::find()
        .filter(audit_log::Column::ObjectId.eq(public_id.clone()))
        .all(&db)
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"key.create") && actions.contains(&"key.revoke"),
        "{actions:?}"
    );
    assert!(audit
        .iter()
        .all(|e| e.actor == format!("user:{admin}") && e.ip.as_deref() == Some("127.0.0.1")));
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_the_grace_period_chosen() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::sign_in(&app, &admin).await;
    let (public_id, old) = create_key(&browser, "", "rotating").await;
    let csrf = browser.csrf().await;
    let rotate = |grace: &'static str| {
        let browser = &browser;
        let csrf = csrf.clone();
        let public_id = public_id.clone();
        async move {
            let res = browser
                .post(
                    &format!("/admin/keys/{public_id}/rotate"),
                    &[("csrf", &csrf), ("grace", grace)],
                )
                .await;
            assert_eq!(res.status, 200, "{}", res.body);
            let marker = "id=\"secret\" value=\"";
            let start = res.body.find(marker).unwrap() + marker.len();
            let end = res.body[start..].find('"').unwrap() + start;
            res.body[start..end].to_string()
        }
    };
    let new = rotate("3600").await;
    assert_ne!(new, old);
    assert!(new.starts_with(&format!("sk-aiaas-{public_id}-")));
    wait_for_status(&app, &new, 200).await;
    assert_eq!(
        models_status(&app, &old).await,
        200,
        "old secret inside its grace period"
    );
    let newest = rotate("0").await;
    wait_for_status(&app, &new, 401).await;
    assert_eq!(models_status(&app, &old).await, 401);
    assert_eq!(models_status(&app, &newest).await, 200);
    let res = browser
        .post(
            &format!("/admin/keys/{public_id}/rotate"),
            &[("csrf", &csrf), ("grace", "99999999")],
        )
        .await;
    assert_eq!(
        res.status, 303,
        "an out-of-range grace goes back with a message"
    );
    assert!(browser
        .get(res.location())
        .await
        .body
        .contains("grace period"));
}

#[tokio::test]
async fn markup_typed_into_any_field_renders_as_text() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let browser = Browser::sign_in(&app, &admin).await;
    let payload = "<script>alert(1)</script>";
    let attr = "\"><img src=x onerror=alert(2)>";
    let (public_id, key) = create_key(&browser, "", payload).await;
    let csrf = browser.csrf().await;
    // JWT key name / issuer, end user of a request, filters reflected in the page, flash text.
    browser
        .post(
            "/admin/jwt-keys/generate",
            &[
                ("csrf", &csrf),
                ("name", payload),
                ("issuer", attr),
                ("audience", ""),
            ],
        )
        .await;
    let res = app
        .with_key(Some(&key))
        .post("/v1/chat/completions", &json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "user": payload}))
        .await;
    assert_eq!(res.status(), 200);
    // Wait for the ledger to write the event.
    let started = std::time::Instant::now();
    loop {
        let body = browser.get("/admin/usage?group=user").await.body;
        if shows_as_text(&body, payload) || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bad_date = browser
        .post(
            &format!("/admin/keys/{public_id}/edit"),
            &[("csrf", &csrf), ("name", "x"), ("expires", payload)],
        )
        .await;
    assert_eq!(bad_date.status, 303);
    for path in [
        "/admin/keys".to_string(),
        format!("/admin/keys/{public_id}"),
        format!("/admin/keys/{public_id}/revoke"),
        "/admin/jwt-keys".to_string(),
        "/admin/usage?group=user".to_string(),
        format!(
            "/admin/usage?model={}&user={}",
            urlencode(attr),
            urlencode(payload)
        ),
        "/admin/audit".to_string(),
        bad_date.location().to_string(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains(payload), "raw payload in {path}");
        assert!(
            !page.body.contains("<img src=x"),
            "raw attribute payload in {path}"
        );
        assert!(
            shows_as_text(&page.body, payload) || shows_as_text(&page.body, attr),
            "escaped payload shown in {path}"
        );
    }
}

/// Whether `body` holds `text` HTML-escaped, with named (`&lt;`) or numeric (`&#60;`, askama's
/// form) character references.
fn shows_as_text(body: &str, text: &str) -> bool {
    let escape = |named: bool| -> String {
        text.chars()
            .map(|c| match (c, named) {
                ('<', true) => "&lt;".to_string(),
                ('>', true) => "&gt;".to_string(),
                ('"', true) => "&quot;".to_string(),
                ('&', true) => "&amp;".to_string(),
                ('<' | '>' | '"' | '&' | '\'', _) => format!("&#{};", c as u32),
                _ => c.to_string(),
            })
            .collect()
    };
    body.contains(&escape(true)) || body.contains(&escape(false))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_console_csv_has_the_rows_and_totals_of_the_cli_export() {
    let app = spawn_app();
    let (tenant, admin, finance) = tenant_with_users(&app).await;
    let browser = Browser::sign_in(&app, &admin).await;
    let (_, key) = create_key(&browser, "", "exporter").await;
    for (model, n) in [(CHAT, 3), (LLAMA, 2)] {
        let res = app
            .with_key(Some(&key))
            .post("/v1/chat/completions", &json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": n}))
            .await;
        assert_eq!(res.status(), 200);
    }
    let res = app
        .with_key(Some(&key))
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": ["a b", "b c"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let db = app.db().await;
    // The rollups are written with the events.
    let started = std::time::Instant::now();
    loop {
        let events = aiaas_admin::entity::usage_event::Entity::find()
            .filter(aiaas_admin::entity::usage_event::Column::TenantId.eq(tenant))
            .count(&db)
            .await
            .unwrap();
        if events == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finance = Browser::sign_in(&app, &finance).await;
    let today = chrono::Utc::now().date_naive();
    let csv = finance
        .get(&format!(
            "/admin/usage/export.csv?from={today}&to={today}&group=model"
        ))
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(csv.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let from = aiaas_admin::usage::parse_time(&today.to_string()).unwrap();
    let query = aiaas_admin::usage::ExportQuery {
        from,
        to: from + chrono::Duration::days(1),
        tenant_id: Some(tenant),
        group_by: vec![
            aiaas_admin::usage::GroupBy::Day,
            aiaas_admin::usage::GroupBy::Model,
        ],
        filters: Default::default(),
    };
    let rows = aiaas_admin::usage::export(&db, &query).await.unwrap();
    assert_eq!(csv.body, aiaas_admin::usage::to_csv(&query.group_by, &rows));
    assert_eq!(
        csv.body.lines().count(),
        4,
        "header + 3 models: {}",
        csv.body
    );
    // The explorer's total row shows the same sums.
    let total_requests: i64 = rows.iter().map(|r| r.totals.requests).sum();
    let total_tokens: i64 = rows
        .iter()
        .map(|r| r.totals.prompt_tokens + r.totals.completion_tokens)
        .sum();
    let page = finance
        .get(&format!("/admin/usage?from={today}&to={today}&group=model"))
        .await;
    assert!(
        page.body
            .contains(&format!("data-total=\"requests\">{total_requests}<")),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains(&format!("data-total=\"tokens\">{total_tokens}<")));
    // Filters narrow both alike.
    let csv = finance
        .get(&format!(
            "/admin/usage/export.csv?from={today}&to={today}&group=model&model={CHAT}"
        ))
        .await;
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
}

#[tokio::test]
async fn the_language_follows_accept_language_and_the_switch() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let zh = Browser::with_language(&app, "zh-CN,zh;q=0.9,en;q=0.5");
    let login = zh.get("/admin/login").await;
    assert!(login.body.contains("lang=\"zh-Hans\"") && login.body.contains("登录"));
    let res = zh.sign_in_with(&admin, PASSWORD).await;
    assert_eq!(res.status, 303);
    let page = zh.get("/admin/keys").await;
    assert!(page.body.contains("API 密钥") && page.body.contains("创建密钥"));
    // A refused form says why in the viewer's language, values included.
    let csrf = zh.csrf().await;
    let wrong = [
        ("csrf", csrf.as_str()),
        ("current_password", "not the password"),
        ("new_password", "a brand new passphrase"),
    ];
    let res = zh.post("/admin/account/password", &wrong).await;
    assert_eq!(res.status, 303);
    let account = zh.get(res.location()).await;
    assert!(
        account.body.contains("请检查表单：当前密码不正确"),
        "{}",
        account.body
    );
    let bad_key = [
        ("csrf", csrf.as_str()),
        ("name", "k"),
        ("models", ""),
        ("expires", "next tuesday"),
    ];
    let res = zh.post("/admin/keys", &bad_key).await;
    assert_eq!(res.status, 303);
    let form = zh.get(res.location()).await;
    assert!(
        form.body
            .contains("请检查表单：`next tuesday` 不是有效日期"),
        "{}",
        form.body
    );
    // The printable statement speaks the viewer's language too.
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let statement = format!("/admin/statements/{month}/print");
    let printed = zh.get(&statement).await;
    assert_eq!(printed.status, 200, "{}", printed.body);
    assert!(
        printed.body.contains("<html lang=zh-Hans>")
            && printed.body.contains("<h1>用量账单</h1>")
            && printed.body.contains("<th>合计</th>"),
        "{}",
        printed.body
    );
    let switch = zh.get("/admin/lang/en?back=/admin/keys").await;
    assert_eq!(switch.status, 303);
    assert_eq!(switch.location(), "/admin/keys");
    let page = zh.get("/admin/keys").await;
    assert!(page.body.contains("lang=\"en\"") && page.body.contains("Create key"));
    let res = zh.post("/admin/account/password", &wrong).await;
    let account = zh.get(res.location()).await;
    assert!(
        account
            .body
            .contains("Please check the form: the current password is not right"),
        "{}",
        account.body
    );
    let printed = zh.get(&statement).await;
    assert!(
        printed.body.contains("<html lang=en>")
            && printed.body.contains("<h1>Usage statement</h1>"),
        "{}",
        printed.body
    );
    // No open redirect through the switch.
    let evil = zh.get("/admin/lang/zh?back=https://evil.example/").await;
    assert_eq!(evil.location(), "/admin/dashboard");
    let evil = zh.get("/admin/lang/zh?back=//evil.example/admin").await;
    assert_eq!(evil.location(), "/admin/dashboard");
}

#[tokio::test]
async fn changing_the_password_signs_out_every_other_session() {
    let app = spawn_app();
    let (_, admin, _) = tenant_with_users(&app).await;
    let here = Browser::sign_in(&app, &admin).await;
    let elsewhere = Browser::sign_in(&app, &admin).await;
    let account = here.get("/admin/account").await;
    assert_eq!(
        account.body.matches("class=\"ua\"").count(),
        2,
        "two sessions listed"
    );
    let csrf = account.csrf();
    let short = here
        .post(
            "/admin/account/password",
            &[
                ("csrf", &csrf),
                ("current_password", PASSWORD),
                ("new_password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, 303);
    assert_eq!(
        elsewhere.get("/admin/dashboard").await.status,
        200,
        "nothing changed"
    );
    let new_password = "an even better passphrase";
    let res = here
        .post(
            "/admin/account/password",
            &[
                ("csrf", &csrf),
                ("current_password", PASSWORD),
                ("new_password", new_password),
            ],
        )
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        here.get("/admin/dashboard").await.status,
        200,
        "this browser stays signed in"
    );
    assert_eq!(
        elsewhere.get("/admin/dashboard").await.status,
        303,
        "the other one is out"
    );
    let fresh = Browser::new(&app);
    assert_eq!(fresh.sign_in_with(&admin, PASSWORD).await.status, 401);
    assert_eq!(fresh.sign_in_with(&admin, new_password).await.status, 303);
}

#[tokio::test]
async fn operators_create_tenants_suspend_them_and_set_prices() {
    let app = spawn_app();
    let operator = user(&app, Role::Operator, None).await;
    let browser = Browser::sign_in(&app, &operator).await;
    let csrf = browser.csrf().await;
    let name = unique("acme");
    let res = browser
        .post("/admin/tenants", &[("csrf", &csrf), ("name", &name)])
        .await;
    assert_eq!(res.status, 303);
    let db = app.db().await;
    let tenant = aiaas_admin::tenants::find_tenant_by_name(&db, &name)
        .await
        .unwrap()
        .unwrap();
    let (_, key) = create_key(&browser, &format!("?tenant={}", tenant.id), "ops-made").await;
    assert_eq!(models_status(&app, &key).await, 200);

    let res = browser
        .post(
            &format!("/admin/tenants/{}/suspended", tenant.id),
            &[("csrf", &csrf), ("value", "1")],
        )
        .await;
    assert_eq!(res.status, 303);
    wait_for_status(&app, &key, 401).await;
    browser
        .post(
            &format!("/admin/tenants/{}/suspended", tenant.id),
            &[("csrf", &csrf), ("value", "0")],
        )
        .await;
    wait_for_status(&app, &key, 200).await;

    let model = unique("priced-model");
    let res = browser
        .post(
            "/admin/prices",
            &[
                ("csrf", &csrf),
                ("model", &model),
                ("input", "0.15"),
                ("output", "0.6"),
                ("from", ""),
            ],
        )
        .await;
    assert_eq!(res.status, 303);
    let prices = browser.get("/admin/prices").await;
    assert!(
        prices.body.contains(&model)
            && prices.body.contains("$0.15")
            && prices.body.contains("$0.60")
    );
    let past = browser
        .post(
            "/admin/prices",
            &[
                ("csrf", &csrf),
                ("model", &model),
                ("input", "1"),
                ("output", "1"),
                ("from", "2020-01-01"),
            ],
        )
        .await;
    assert_eq!(past.status, 303);
    assert!(browser
        .get(past.location())
        .await
        .body
        .contains("cannot start in the past"));

    let audit = browser.get("/admin/audit").await;
    for action in [
        "tenant.create",
        "tenant.suspend",
        "tenant.resume",
        "price.set",
        "key.create",
    ] {
        assert!(audit.body.contains(action), "{action} in the audit log");
    }
    // A tenant admin cannot create an operator.
    let (_, admin, _) = tenant_with_users(&app).await;
    let tenant_admin = Browser::sign_in(&app, &admin).await;
    let csrf = tenant_admin.csrf().await;
    let email = format!("{}@example.com", unique("op"));
    let res = tenant_admin
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("password", PASSWORD),
                ("role", "operator"),
            ],
        )
        .await;
    assert_eq!(res.status, 404);
    assert!(aiaas_admin::users::find_user_by_email(&db, &email)
        .await
        .unwrap()
        .is_none());
}
