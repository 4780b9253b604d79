//! Credential verification on the hot path. An `Authenticator` keeps every API key (public id,
//! SHA-256 of the secret, tenant, allowlist, limits, revocation) and every JWT verification key
//! (parsed once) in memory, and a background task re-reads what changed in the database every
//! `refresh_interval` (250 ms by default), so revoking a key or disabling a JWT key takes effect on
//! every server sharing the database within a second. A cache hit costs a hash lookup and one
//! SHA-256 (API key) or one signature check (JWT, itself cached per token): no query.
//! A key the cache has not seen yet (created a moment ago by another process) is read once from
//! the database. `last_used_at` is coalesced in memory and written every `last_used_flush`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use subtle::ConstantTimeEq;

use crate::entity::{api_key, jwt_key, tenant};
use crate::jwt_keys::{decoding_key, Claims};
use crate::keys::{self, parse_hex32, parse_key};
use crate::limits::Limits;

/// `[auth]` in the configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// When false, `/v1` accepts requests without a credential (benchmarks and local
    /// experiments only; every request is then attributed to no tenant).
    pub enabled: bool,
    /// How often the cache re-reads changed keys from the database.
    pub refresh_interval_ms: u64,
    /// Clock skew tolerated on `exp` / `nbf` of JWTs.
    pub jwt_leeway_secs: u64,
    /// How often `last_used_at` is written back.
    pub last_used_flush_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_interval_ms: 250,
            jwt_leeway_secs: 30,
            last_used_flush_secs: 10,
        }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    /// A JWT minted by aiaas for an API key.
    KeyToken,
    /// A JWT signed by the tenant's own registered key (`kid`).
    TenantToken {
        kid: String,
    },
    /// Authentication is switched off.
    Anonymous,
    /// An operator token minted by aiaas: reads any tenant's usage, runs nothing.
    Operator,
}

/// Who is calling: yielded for every authenticated request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: i64,
    pub key_id: Option<i64>,
    pub key_public_id: Option<Arc<str>>,
    /// The end user (`sub` of a JWT).
    pub subject: Option<String>,
    pub credential: Credential,
    /// The key's allowlist (`None`: every model).
    pub key_models: Option<Arc<[String]>>,
    /// A token's narrower list (`None`: no narrowing).
    pub token_models: Option<Arc<[String]>>,
    /// The key's own rate limits (the tenant's come from the policy cache).
    pub key_limits: Limits,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            tenant_id: 0,
            key_id: None,
            key_public_id: None,
            subject: None,
            credential: Credential::Anonymous,
            key_models: None,
            token_models: None,
            key_limits: Limits::default(),
        }
    }

    pub fn may_use(&self, model: &str) -> bool {
        let allows = |list: &Option<Arc<[String]>>| {
            list.as_ref().is_none_or(|l| l.iter().any(|m| m == model))
        };
        allows(&self.key_models) && allows(&self.token_models)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown, revoked, expired or badly signed: the client learns nothing
    /// more than "refused"; the reason is for our logs.
    #[error("credential refused: {0}")]
    Refused(&'static str),
    /// The database could not be asked about a key the cache has not seen.
    #[error("credential store unavailable: {0}")]
    Unavailable(#[source] DbErr),
}

#[derive(Debug, Clone, PartialEq)]
struct CachedKey {
    id: i64,
    public_id: Arc<str>,
    tenant_id: i64,
    hash: [u8; 32],
    /// After a rotation: the replaced secret's hash and until when it is still accepted.
    previous: Option<([u8; 32], DateTime<Utc>)>,
    models: Option<Arc<[String]>>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
    limits: Limits,
    updated_at: DateTime<Utc>,
}

impl CachedKey {
    fn from_row(row: &api_key::Model) -> Self {
        Self {
            id: row.id,
            public_id: Arc::from(row.public_id.as_str()),
            tenant_id: row.tenant_id,
            // An unreadable hash can never match: all-zero is not a SHA-256 anyone can produce.
            hash: parse_hex32(&row.secret_hash).unwrap_or([0; 32]),
            previous: row
                .previous_secret_hash
                .as_deref()
                .and_then(parse_hex32)
                .zip(row.previous_valid_until),
            models: keys::allowed_models(row).map(Arc::from),
            expires_at: row.expires_at,
            revoked: row.revoked_at.is_some(),
            limits: Limits::from_key(row),
            updated_at: row.updated_at,
        }
    }

    fn usable(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| at > now)
    }
}

struct CachedJwtKey {
    tenant_id: Option<i64>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    enabled: bool,
    updated_at: DateTime<Utc>,
}

impl CachedJwtKey {
    fn from_row(row: &jwt_key::Model, leeway: u64) -> Option<Self> {
        let (algorithm, key) = match decoding_key(row) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::warn!(kid = %row.kid, error = %err, "unusable JWT verification key skipped");
                return None;
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp"];
        match &row.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &row.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Some(Self {
            tenant_id: row.tenant_id,
            algorithm,
            key,
            validation,
            enabled: row.enabled,
            updated_at: row.updated_at,
        })
    }
}

/// What the in-memory pass found.
enum Lookup {
    Done(Result<Caller, AuthError>),
    /// The cache has not seen this API key public id.
    MissKey(String),
    /// The cache has not seen this JWT `kid`.
    MissJwtKey(String),
}

/// A verified token, kept until it expires or any key changes.
struct VerifiedToken {
    caller: Caller,
    exp: f64,
}

const TOKEN_CACHE_MAX: usize = 50_000;
const UNKNOWN_MAX: usize = 10_000;
const UNKNOWN_TTL: Duration = Duration::from_secs(1);
/// Rows changed this long before the newest change seen are read again, so a writer whose
/// transaction committed late (or whose clock lags) is not missed.
const REREAD_WINDOW: chrono::Duration = chrono::Duration::seconds(10);
/// A full reload now and then, as a safety net for anything the incremental read missed.
const FULL_RELOAD: Duration = Duration::from_secs(60);

struct Inner {
    db: DatabaseConnection,
    settings: AuthSettings,
    keys: RwLock<HashMap<String, Arc<CachedKey>>>,
    jwt_keys: RwLock<HashMap<String, Arc<CachedJwtKey>>>,
    tokens: RwLock<HashMap<String, Arc<VerifiedToken>>>,
    /// Tenants an operator suspended: every credential of theirs is refused.
    suspended: RwLock<std::collections::HashSet<i64>>,
    touched: Mutex<HashMap<i64, DateTime<Utc>>>,
    marks: Mutex<Marks>,
    /// Public ids the database did not know, and when it was asked: a burst of requests with the
    /// same made-up key costs one query per `UNKNOWN_TTL`, not one per request.
    unknown: Mutex<HashMap<String, Instant>>,
}

#[derive(Default)]
struct Marks {
    keys: Option<DateTime<Utc>>,
    jwt_keys: Option<DateTime<Utc>>,
    full_reload: Option<Instant>,
}

/// Cheap to clone; the refresh task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Authenticator {
    /// Load every key, then keep the cache fresh from a background task (needs a Tokio runtime).
    pub async fn start(db: DatabaseConnection, settings: AuthSettings) -> Result<Self, DbErr> {
        let auth = Self {
            inner: Arc::new(Inner {
                db,
                settings,
                keys: RwLock::default(),
                jwt_keys: RwLock::default(),
                tokens: RwLock::default(),
                suspended: RwLock::default(),
                touched: Mutex::default(),
                marks: Mutex::default(),
                unknown: Mutex::default(),
            }),
        };
        auth.refresh().await?;
        tokio::spawn(refresh_loop(Arc::downgrade(&auth.inner)));
        Ok(auth)
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// Verify a bearer credential (an API key or a JWT).
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, AuthError> {
        for _ in 0..3 {
            match self.authenticate_cached(bearer) {
                Lookup::Done(result) => return result,
                Lookup::MissKey(public_id) => {
                    if self.inner.recently_unknown(&public_id) {
                        return Err(AuthError::Refused("unknown key"));
                    }
                    let row = keys::find_key(&self.inner.db, &public_id)
                        .await
                        .map_err(|e| AuthError::Unavailable(into_db_err(e)))?;
                    match row {
                        Some(row) => {
                            self.inner.put_key(&row);
                        }
                        None => {
                            self.inner.remember_unknown(public_id);
                            return Err(AuthError::Refused("unknown key"));
                        }
                    }
                }
                Lookup::MissJwtKey(kid) => {
                    let row = crate::jwt_keys::find_jwt_key(&self.inner.db, &kid)
                        .await
                        .map_err(|e| AuthError::Unavailable(into_db_err(e)))?;
                    match row {
                        Some(row) => {
                            if !self.inner.put_jwt_key(&row) {
                                return Err(AuthError::Refused("unusable kid"));
                            }
                        }
                        None => return Err(AuthError::Refused("unknown kid")),
                    }
                }
            }
        }
        Err(AuthError::Refused("credential not found after reload"))
    }

    /// The in-memory pass only: `Some` when the cache could decide (the hot path; benchmarked).
    pub fn authenticate_hot(&self, bearer: &str) -> Option<Result<Caller, AuthError>> {
        match self.authenticate_cached(bearer) {
            Lookup::Done(result) => Some(result),
            _ => None,
        }
    }

    fn authenticate_cached(&self, bearer: &str) -> Lookup {
        if bearer.starts_with(keys::KEY_PREFIX) {
            self.verify_api_key(bearer)
        } else if bearer.bytes().filter(|b| *b == b'.').count() == 2 {
            self.verify_jwt(bearer)
        } else {
            Lookup::Done(Err(AuthError::Refused("not a credential")))
        }
    }

    fn verify_api_key(&self, bearer: &str) -> Lookup {
        let Some(parsed) = parse_key(bearer) else {
            return Lookup::Done(Err(AuthError::Refused("malformed key")));
        };
        let Some(key) = read(&self.inner.keys).get(parsed.public_id).cloned() else {
            return Lookup::MissKey(parsed.public_id.to_string());
        };
        let hash = keys::hash_secret(parsed.secret);
        let now = Utc::now();
        let current = bool::from(hash.ct_eq(&key.hash));
        let previous = key
            .previous
            .is_some_and(|(old, until)| bool::from(hash.ct_eq(&old)) & (now < until));
        if !(current | previous) {
            return Lookup::Done(Err(AuthError::Refused("wrong secret")));
        }
        if !key.usable(now) {
            return Lookup::Done(Err(AuthError::Refused("revoked or expired key")));
        }
        if self.inner.is_suspended(key.tenant_id) {
            return Lookup::Done(Err(AuthError::Refused("suspended tenant")));
        }
        self.inner.touch(key.id, now);
        Lookup::Done(Ok(caller_for_key(&key, Credential::ApiKey, None, None)))
    }

    fn verify_jwt(&self, token: &str) -> Lookup {
        let now = Utc::now();
        if let Some(hit) = read(&self.inner.tokens).get(token).cloned() {
            if (now.timestamp() as f64) < hit.exp + self.inner.settings.jwt_leeway_secs as f64 {
                if hit.caller.credential != Credential::Operator
                    && self.inner.is_suspended(hit.caller.tenant_id)
                {
                    return Lookup::Done(Err(AuthError::Refused("suspended tenant")));
                }
                let Some(public_id) = hit.caller.key_public_id.as_deref() else {
                    return Lookup::Done(Ok(hit.caller.clone()));
                };
                // A key can expire without any change to its row.
                let usable = read(&self.inner.keys)
                    .get(public_id)
                    .is_some_and(|k| k.usable(now));
                if !usable {
                    return Lookup::Done(Err(AuthError::Refused(
                        "token of a revoked or expired key",
                    )));
                }
                if let Some(id) = hit.caller.key_id {
                    self.inner.touch(id, now);
                }
                return Lookup::Done(Ok(hit.caller.clone()));
            }
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Lookup::Done(Err(AuthError::Refused("unreadable JWT header"))),
        };
        let Some(kid) = header.kid else {
            return Lookup::Done(Err(AuthError::Refused("JWT without kid")));
        };
        let Some(jwt_key) = read(&self.inner.jwt_keys).get(&kid).cloned() else {
            return Lookup::MissJwtKey(kid);
        };
        if !jwt_key.enabled {
            return Lookup::Done(Err(AuthError::Refused("disabled JWT key")));
        }
        if header.alg != jwt_key.algorithm {
            return Lookup::Done(Err(AuthError::Refused(
                "JWT algorithm does not match its key",
            )));
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &jwt_key.key, &jwt_key.validation)
        {
            Ok(data) => data.claims,
            Err(_) => return Lookup::Done(Err(AuthError::Refused("JWT failed verification"))),
        };
        if claims.sub.as_ref().is_some_and(|s| s.len() > 256) {
            return Lookup::Done(Err(AuthError::Refused("JWT sub longer than 256 bytes")));
        }
        let token_models = claims.models.clone().map(Arc::from);
        let caller = match jwt_key.tenant_id {
            None if claims.aiaas_role.as_deref() == Some(crate::jwt_keys::OPERATOR_ROLE) => {
                let mut caller = Caller::anonymous();
                caller.credential = Credential::Operator;
                caller.subject = claims.sub.clone();
                // Run no model: an empty allowlist.
                caller.key_models = Some(Arc::from(Vec::new()));
                caller
            }
            None => {
                let Some(public_id) = claims.aiaas_key.as_deref() else {
                    return Lookup::Done(Err(AuthError::Refused("minted JWT without key")));
                };
                let Some(key) = read(&self.inner.keys).get(public_id).cloned() else {
                    return Lookup::MissKey(public_id.to_string());
                };
                if !key.usable(now) {
                    return Lookup::Done(Err(AuthError::Refused(
                        "token of a revoked or expired key",
                    )));
                }
                self.inner.touch(key.id, now);
                caller_for_key(&key, Credential::KeyToken, claims.sub.clone(), token_models)
            }
            Some(tenant_id) => Caller {
                tenant_id,
                key_id: None,
                key_public_id: None,
                subject: claims.sub.clone(),
                credential: Credential::TenantToken { kid },
                key_models: None,
                token_models,
                key_limits: Limits::default(),
            },
        };
        if caller.credential != Credential::Operator && self.inner.is_suspended(caller.tenant_id) {
            return Lookup::Done(Err(AuthError::Refused("suspended tenant")));
        }
        if let Some(exp) = claims.exp {
            let mut tokens = write(&self.inner.tokens);
            if tokens.len() >= TOKEN_CACHE_MAX {
                tokens.clear();
            }
            tokens.insert(
                token.to_string(),
                Arc::new(VerifiedToken {
                    caller: caller.clone(),
                    exp,
                }),
            );
        }
        Lookup::Done(Ok(caller))
    }

    /// Re-read what changed since the last pass (everything on the first pass and every minute).
    pub async fn refresh(&self) -> Result<(), DbErr> {
        self.inner.refresh().await
    }

    /// Write the coalesced `last_used_at` times now (also done periodically and at shutdown).
    pub async fn flush_last_used(&self) -> Result<(), DbErr> {
        self.inner.flush_last_used().await
    }
}

fn into_db_err(err: crate::error::AdminError) -> DbErr {
    match err {
        crate::error::AdminError::Db(e) => e,
        other => DbErr::Custom(other.to_string()),
    }
}

fn caller_for_key(
    key: &CachedKey,
    credential: Credential,
    subject: Option<String>,
    token_models: Option<Arc<[String]>>,
) -> Caller {
    Caller {
        tenant_id: key.tenant_id,
        key_id: Some(key.id),
        key_public_id: Some(key.public_id.clone()),
        subject,
        credential,
        key_models: key.models.clone(),
        token_models,
        key_limits: key.limits,
    }
}

impl Inner {
    fn recently_unknown(&self, public_id: &str) -> bool {
        lock(&self.unknown)
            .get(public_id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
    }

    fn remember_unknown(&self, public_id: String) {
        let mut unknown = lock(&self.unknown);
        if unknown.len() >= UNKNOWN_MAX {
            unknown.retain(|_, at| at.elapsed() < UNKNOWN_TTL);
            if unknown.len() >= UNKNOWN_MAX {
                unknown.clear();
            }
        }
        unknown.insert(public_id, Instant::now());
    }

    fn is_suspended(&self, tenant_id: i64) -> bool {
        let suspended = read(&self.suspended);
        !suspended.is_empty() && suspended.contains(&tenant_id)
    }

    fn touch(&self, key_id: i64, now: DateTime<Utc>) {
        lock(&self.touched).insert(key_id, now);
    }

    /// Cache a key row unless a newer version is already cached; true if anything changed.
    fn put_key(&self, row: &api_key::Model) -> bool {
        let fresh = CachedKey::from_row(row);
        let mut keys = write(&self.keys);
        match keys.get(&row.public_id) {
            Some(cached) if cached.updated_at > fresh.updated_at || **cached == fresh => false,
            _ => {
                keys.insert(row.public_id.clone(), Arc::new(fresh));
                true
            }
        }
    }

    /// Cache a JWT key row; false if its key material is unusable.
    fn put_jwt_key(&self, row: &jwt_key::Model) -> bool {
        let Some(fresh) = CachedJwtKey::from_row(row, self.settings.jwt_leeway_secs) else {
            write(&self.jwt_keys).remove(&row.kid);
            return false;
        };
        let mut jwt_keys = write(&self.jwt_keys);
        if jwt_keys
            .get(&row.kid)
            .is_none_or(|cached| cached.updated_at <= fresh.updated_at)
        {
            jwt_keys.insert(row.kid.clone(), Arc::new(fresh));
        }
        true
    }

    async fn refresh(&self) -> Result<(), DbErr> {
        let (key_mark, jwt_mark) = {
            let mut marks = lock(&self.marks);
            if marks
                .full_reload
                .is_none_or(|at| at.elapsed() >= FULL_RELOAD)
            {
                marks.full_reload = Some(Instant::now());
                (None, None)
            } else {
                (marks.keys, marks.jwt_keys)
            }
        };
        let mut key_query = api_key::Entity::find();
        if let Some(mark) = key_mark {
            key_query = key_query.filter(api_key::Column::UpdatedAt.gte(mark - REREAD_WINDOW));
        }
        let key_rows = key_query.all(&self.db).await?;
        let mut jwt_query = jwt_key::Entity::find();
        if let Some(mark) = jwt_mark {
            jwt_query = jwt_query.filter(jwt_key::Column::UpdatedAt.gte(mark - REREAD_WINDOW));
        }
        let jwt_rows = jwt_query.all(&self.db).await?;
        // Few rows (suspended tenants only), read in full every pass.
        let suspended: std::collections::HashSet<i64> = tenant::Entity::find()
            .select_only()
            .column(tenant::Column::Id)
            .filter(tenant::Column::SuspendedAt.is_not_null())
            .into_tuple::<i64>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        if *read(&self.suspended) != suspended {
            *write(&self.suspended) = suspended;
        }

        let mut changed = false;
        for row in &key_rows {
            changed |= self.put_key(row);
        }
        for row in &jwt_rows {
            let before = read(&self.jwt_keys).get(&row.kid).map(|k| k.updated_at);
            self.put_jwt_key(row);
            changed |= before != Some(row.updated_at);
        }
        if changed {
            // A verified token may stand for a key that just changed: verify again.
            write(&self.tokens).clear();
        }
        let mut marks = lock(&self.marks);
        if let Some(newest) = key_rows.iter().map(|r| r.updated_at).max() {
            marks.keys = Some(marks.keys.map_or(newest, |m| m.max(newest)));
        } else if key_mark.is_none() {
            marks.keys = Some(Utc::now() - REREAD_WINDOW);
        }
        if let Some(newest) = jwt_rows.iter().map(|r| r.updated_at).max() {
            marks.jwt_keys = Some(marks.jwt_keys.map_or(newest, |m| m.max(newest)));
        } else if jwt_mark.is_none() {
            marks.jwt_keys = Some(Utc::now() - REREAD_WINDOW);
        }
        Ok(())
    }

    async fn flush_last_used(&self) -> Result<(), DbErr> {
        let touched: Vec<(i64, DateTime<Utc>)> = lock(&self.touched).drain().collect();
        for (id, at) in touched {
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
                .filter(api_key::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }
}

async fn refresh_loop(inner: Weak<Inner>) {
    let Some(settings) = inner.upgrade().map(|i| i.settings.clone()) else {
        return;
    };
    let mut interval =
        tokio::time::interval(Duration::from_millis(settings.refresh_interval_ms.max(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flush_every = Duration::from_secs(settings.last_used_flush_secs.max(1));
    let mut last_flush = Instant::now();
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(err) = inner.refresh().await {
            tracing::warn!(error = %err, "auth cache refresh failed; serving from the last good copy");
        }
        if last_flush.elapsed() >= flush_every {
            last_flush = Instant::now();
            if let Err(err) = inner.flush_last_used().await {
                tracing::warn!(error = %err, "writing last_used_at failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_narrows_a_key_allowlist_and_never_widens_it() {
        let list = |m: &[&str]| {
            Some(Arc::from(
                m.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ))
        };
        let mut caller = Caller::anonymous();
        assert!(caller.may_use("anything"));
        caller.key_models = list(&["a", "b"]);
        assert!(caller.may_use("a") && caller.may_use("b") && !caller.may_use("c"));
        caller.token_models = list(&["b", "c"]);
        assert!(!caller.may_use("a") && caller.may_use("b") && !caller.may_use("c"));
    }
}
