//! JWT verification keys. A tenant registers a key (an HS256 secret, or an RS256 / ES256 / EdDSA
//! public key) so that its own backend can sign short-lived tokens for its end users; the server
//! keeps one HS256 key of its own (no tenant) to sign the tokens it mints for API keys.

use base64::Engine as _;
use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::Rng;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, Event};
use crate::entity::jwt_key;
use crate::error::{AdminError, Result};
use crate::keys::{self, random_id};
use crate::Scope;
use crate::Text;

/// The claims aiaas reads. `exp`, `nbf`, `iss` and `aud` are checked by the verifier itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Read to know how long a verified token may be kept; checked by the verifier.
    #[serde(default, skip_serializing)]
    pub exp: Option<f64>,
    /// The end user the token was issued for; usage is attributed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Narrows the models the token may use (never widens a key's allowlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Tokens minted by aiaas: the public id of the API key they stand for. Ignored in tokens
    /// signed by a tenant's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aiaas_key: Option<String>,
    /// Tokens minted by aiaas for operators: `operator` (read any tenant's usage; run nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aiaas_role: Option<String>,
}

/// The `aiaas_role` of an operator token.
pub const OPERATOR_ROLE: &str = "operator";

/// The algorithms a verification key may be pinned to.
pub fn parse_algorithm(name: &str) -> Result<Algorithm> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AdminError::invalid(
            "alg",
            Text::new(
                format!("unsupported algorithm `{other}`: use HS256, RS256, ES256 or EdDSA"),
                format!("不支持的算法 `{other}`：请使用 HS256、RS256、ES256 或 EdDSA"),
            ),
        )),
    }
}

pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// The key that verifies tokens for this row, parsed once (the auth cache keeps it).
pub fn decoding_key(row: &jwt_key::Model) -> Result<(Algorithm, DecodingKey)> {
    let alg = parse_algorithm(&row.algorithm)?;
    let key = match alg {
        Algorithm::HS256 => {
            let secret = row.secret.as_deref().ok_or_else(|| {
                AdminError::invalid(
                    "secret",
                    Text::new("an HS256 key needs a secret", "HS256 验证密钥需要共享密钥"),
                )
            })?;
            DecodingKey::from_secret(&decode_secret(secret)?)
        }
        _ => {
            let pem = row.public_key.as_deref().ok_or_else(|| {
                AdminError::invalid(
                    "public_key",
                    Text::new("this algorithm needs a public key", "此算法需要公钥"),
                )
            })?;
            let parsed = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_ed_pem(pem.as_bytes()),
            };
            parsed.map_err(|e| {
                AdminError::invalid(
                    "public_key",
                    Text::new(
                        format!("not a PEM public key for {}: {e}", row.algorithm),
                        format!("不是 {} 的 PEM 公钥：{e}", row.algorithm),
                    ),
                )
            })?
        }
    };
    Ok((alg, key))
}

fn decode_secret(secret: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .map_err(|_| {
            AdminError::invalid(
                "secret",
                Text::new(
                    "the stored HS256 secret is not base64url",
                    "已保存的 HS256 共享密钥不是 base64url 编码",
                ),
            )
        })
}

pub struct NewJwtKey {
    pub tenant_id: i64,
    pub name: Option<String>,
    pub algorithm: String,
    /// HS256: the shared secret (at least 32 bytes).
    pub secret: Option<SecretString>,
    /// RS256 / ES256 / EdDSA: the PEM public key.
    pub public_key: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

const MIN_HS256_SECRET: usize = 32;

pub async fn insert_jwt_key(
    db: &impl TransactionTrait,
    new: NewJwtKey,
    actor: &Actor,
) -> Result<jwt_key::Model> {
    let alg = parse_algorithm(&new.algorithm)?;
    let (secret, public_key) = match (alg, &new.secret, &new.public_key) {
        (Algorithm::HS256, Some(secret), None) => {
            if secret.expose_secret().len() < MIN_HS256_SECRET {
                return Err(AdminError::invalid(
                    "secret",
                    Text::new(
                        format!("an HS256 secret needs at least {MIN_HS256_SECRET} bytes"),
                        format!("HS256 共享密钥至少需要 {MIN_HS256_SECRET} 字节"),
                    ),
                ));
            }
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret.expose_secret().as_bytes());
            (Some(encoded), None)
        }
        (Algorithm::HS256, _, _) => {
            return Err(AdminError::invalid(
                "secret",
                Text::new(
                    "an HS256 key takes a secret and no public key",
                    "HS256 验证密钥只需共享密钥，不接受公钥",
                ),
            ))
        }
        (_, None, Some(pem)) => (None, Some(pem.trim().to_string())),
        (_, _, _) => {
            return Err(AdminError::invalid(
                "public_key",
                Text::new(
                    format!(
                        "an {} key takes a PEM public key and no secret",
                        new.algorithm
                    ),
                    format!("{} 验证密钥只需 PEM 公钥，不接受共享密钥", new.algorithm),
                ),
            ))
        }
    };
    let now = Utc::now();
    let row = jwt_key::Model {
        id: 0,
        kid: format!("jwk_{}", random_id(16)),
        tenant_id: Some(new.tenant_id),
        name: new.name.unwrap_or_default(),
        algorithm: algorithm_name(alg).into(),
        secret,
        public_key,
        issuer: new.issuer.filter(|s| !s.is_empty()),
        audience: new.audience.filter(|s| !s.is_empty()),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    // Refuse key material that would never verify anything.
    decoding_key(&row)?;
    let mut row = row.into_active_model().reset_all();
    row.id = sea_orm::ActiveValue::NotSet;
    let txn = crate::db::begin_write(db).await?;
    let created = row.insert(&txn).await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(new.tenant_id),
            action: "jwt_key.create",
            object_type: "jwt_key",
            object_id: created.kid.clone(),
            detail: Some(serde_json::json!({
                "algorithm": created.algorithm, "issuer": created.issuer, "audience": created.audience,
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(created)
}

pub async fn list_jwt_keys(
    db: &impl ConnectionTrait,
    tenant_id: i64,
) -> Result<Vec<jwt_key::Model>> {
    Ok(jwt_key::Entity::find()
        .filter(jwt_key::Column::TenantId.eq(tenant_id))
        .order_by_asc(jwt_key::Column::Id)
        .all(db)
        .await?)
}

pub async fn find_jwt_key(db: &impl ConnectionTrait, kid: &str) -> Result<Option<jwt_key::Model>> {
    Ok(jwt_key::Entity::find()
        .filter(jwt_key::Column::Kid.eq(kid))
        .one(db)
        .await?)
}

/// Enable or disable a tenant's verification key; takes effect within the auth refresh interval.
pub async fn set_jwt_key_enabled(
    db: &impl TransactionTrait,
    scope: Scope,
    kid: &str,
    enabled: bool,
    actor: &Actor,
) -> Result<jwt_key::Model> {
    let txn = crate::db::begin_write(db).await?;
    let row = find_jwt_key(&txn, kid)
        .await?
        .filter(|k| matches!(k.tenant_id, Some(t) if scope.covers(t)))
        .ok_or(AdminError::NotFound("jwt key"))?;
    let tenant_id = row.tenant_id;
    let mut active = row.into_active_model();
    active.enabled = Set(enabled);
    active.updated_at = Set(Utc::now());
    let row = active.update(&txn).await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id,
            action: if enabled {
                "jwt_key.enable"
            } else {
                "jwt_key.disable"
            },
            object_type: "jwt_key",
            object_id: kid.to_string(),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// The server's own signing key, created on first use (shared by every replica through the
/// database, so a token minted by one verifies on all).
pub async fn ensure_platform_key(db: &impl TransactionTrait) -> Result<jwt_key::Model> {
    let txn = crate::db::begin_write(db).await?;
    let existing = jwt_key::Entity::find()
        .filter(jwt_key::Column::TenantId.is_null())
        .filter(jwt_key::Column::Enabled.eq(true))
        .order_by_desc(jwt_key::Column::Id)
        .one(&txn)
        .await?;
    if let Some(row) = existing {
        txn.commit().await?;
        return Ok(row);
    }
    let mut secret = [0u8; 48];
    rand::rng().fill(&mut secret);
    let now = Utc::now();
    let row = jwt_key::ActiveModel {
        kid: Set(format!("aiaas_{}", random_id(16))),
        tenant_id: Set(None),
        name: Set("aiaas token signing key".into()),
        algorithm: Set("HS256".into()),
        secret: Set(Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        )),
        public_key: Set(None),
        issuer: Set(Some(PLATFORM_ISSUER.into())),
        audience: Set(None),
        enabled: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// `iss` of the tokens aiaas mints.
pub const PLATFORM_ISSUER: &str = "aiaas";

/// A token for an API key: signed with the server's key, expiring after `ttl`, optionally for an
/// end user (`sub`) and a narrower model list. Revoking the key revokes its tokens.
pub async fn mint_key_token(
    db: &(impl ConnectionTrait + TransactionTrait),
    scope: Scope,
    public_id: &str,
    ttl: Duration,
    sub: Option<String>,
    models: Option<Vec<String>>,
) -> Result<String> {
    if ttl <= Duration::zero() || ttl > Duration::days(366) {
        return Err(AdminError::invalid(
            "ttl",
            Text::new(
                "the lifetime must be between 1 second and 366 days",
                "有效期必须在 1 秒到 366 天之间",
            ),
        ));
    }
    let key = keys::find_key_in_scope(db, scope, public_id).await?;
    if !keys::is_active(&key, Utc::now()) {
        return Err(AdminError::invalid(
            "key",
            Text::new("the key is revoked or expired", "该密钥已吊销或已过期"),
        ));
    }
    let signing = ensure_platform_key(db).await?;
    let secret = decode_secret(signing.secret.as_deref().unwrap_or_default())?;
    let now = Utc::now();
    #[derive(Serialize)]
    struct Minted<'a> {
        iss: &'a str,
        iat: i64,
        exp: i64,
        #[serde(flatten)]
        claims: Claims,
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(signing.kid.clone());
    jsonwebtoken::encode(
        &header,
        &Minted {
            iss: PLATFORM_ISSUER,
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
            claims: Claims {
                exp: None,
                sub,
                models,
                aiaas_key: Some(key.public_id),
                aiaas_role: None,
            },
        },
        &EncodingKey::from_secret(&secret),
    )
    .map_err(sign_failed)
}

/// Mint a short-lived operator token (at most 24 h): it reads any tenant's usage through the
/// usage API and can run no model. Minting is audited; `name` says who it is for.
pub async fn mint_operator_token(
    db: &(impl ConnectionTrait + TransactionTrait),
    name: &str,
    ttl: Duration,
    actor: &crate::audit::Actor,
) -> Result<String> {
    if ttl <= Duration::zero() || ttl > Duration::hours(24) {
        return Err(AdminError::invalid(
            "ttl",
            Text::new(
                "an operator token lives between 1 second and 24 hours",
                "运营管理员令牌的有效期必须在 1 秒到 24 小时之间",
            ),
        ));
    }
    let signing = ensure_platform_key(db).await?;
    let secret = decode_secret(signing.secret.as_deref().unwrap_or_default())?;
    let now = Utc::now();
    #[derive(Serialize)]
    struct Minted<'a> {
        iss: &'a str,
        iat: i64,
        exp: i64,
        sub: &'a str,
        aiaas_role: &'a str,
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(signing.kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &Minted {
            iss: PLATFORM_ISSUER,
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
            sub: name,
            aiaas_role: OPERATOR_ROLE,
        },
        &EncodingKey::from_secret(&secret),
    )
    .map_err(sign_failed)?;
    crate::audit::insert_event(
        db,
        actor,
        crate::audit::Event {
            tenant_id: None,
            action: "operator_token.mint",
            object_type: "operator_token",
            object_id: name.to_string(),
            detail: Some(serde_json::json!({ "expires_at": now + ttl })),
        },
    )
    .await?;
    Ok(token)
}

fn sign_failed(e: jsonwebtoken::errors::Error) -> AdminError {
    AdminError::invalid(
        "token",
        Text::new(
            format!("cannot sign the token: {e}"),
            format!("无法签发令牌：{e}"),
        ),
    )
}
