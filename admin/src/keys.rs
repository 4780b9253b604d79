//! API keys: `sk-aiaas-<public id>-<secret>`. The secret is 32 random bytes (base64url); only the
//! public id and the SHA-256 of the secret are stored, and the full key is returned exactly once.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::Rng;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::audit::{self, Actor, Event};
use crate::entity::api_key;
use crate::error::{AdminError, Result};
use crate::Scope;
use crate::Text;

pub const KEY_PREFIX: &str = "sk-aiaas-";
const PUBLIC_ID_LEN: usize = 12;
const PUBLIC_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_BYTES: usize = 32;

/// The two parts of a well-formed key; says nothing about whether it exists.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub public_id: &'a str,
    pub secret: &'a str,
}

pub fn parse_key(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (public_id, secret) = rest.split_once('-')?;
    let well_formed = public_id.len() == PUBLIC_ID_LEN
        && public_id.bytes().all(|b| PUBLIC_ID_ALPHABET.contains(&b))
        && (40..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(ParsedKey { public_id, secret })
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn random_id(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| PUBLIC_ID_ALPHABET[rng.random_range(0..PUBLIC_ID_ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub tenant_id: i64,
    pub name: Option<String>,
    /// Models the key may use; `None` for every model.
    pub models: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<i64>,
    pub limits: crate::limits::Limits,
}

pub struct CreatedKey {
    pub key: api_key::Model,
    /// The full key, shown once.
    pub secret: SecretString,
}

/// The key's model allowlist, or `None` for every model.
pub fn allowed_models(key: &api_key::Model) -> Option<Vec<String>> {
    key.models
        .as_deref()
        .map(|json| serde_json::from_str(json).unwrap_or_default())
}

pub(crate) fn validate(new: &NewKey) -> Result<()> {
    if let Some(name) = &new.name {
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AdminError::invalid(
                "name",
                Text::new(
                    "a key name has at most 100 printable characters",
                    "密钥名称最多 100 个可打印字符",
                ),
            ));
        }
    }
    if let Some(models) = &new.models {
        if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
            return Err(AdminError::invalid(
                "models",
                Text::new(
                    "the model list must name at least one model",
                    "模型列表至少要包含一个模型",
                ),
            ));
        }
    }
    if matches!(new.expires_at, Some(at) if at <= Utc::now()) {
        return Err(AdminError::invalid(
            "expires_at",
            Text::new("the expiry must be in the future", "过期时间必须晚于现在"),
        ));
    }
    new.limits.validate()
}

pub async fn insert_key(
    db: &impl TransactionTrait,
    new: NewKey,
    actor: &Actor,
) -> Result<CreatedKey> {
    validate(&new)?;
    let public_id = random_id(PUBLIC_ID_LEN);
    let secret = random_secret();
    let now = Utc::now();
    let txn = crate::db::begin_write(db).await?;
    let key = api_key::ActiveModel {
        public_id: Set(public_id.clone()),
        secret_hash: Set(hex(&hash_secret(&secret))),
        prefix: Set(format!("{KEY_PREFIX}{public_id}-{}…", &secret[..4])),
        name: Set(new.name.clone().unwrap_or_default()),
        tenant_id: Set(new.tenant_id),
        created_by: Set(new.created_by),
        created_at: Set(now),
        updated_at: Set(now),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
        models: Set(new
            .models
            .as_ref()
            .map(|m| serde_json::Value::from(m.clone()).to_string())),
        rpm_limit: Set(new.limits.rpm),
        rpm_burst: Set(new.limits.rpm_burst),
        tpm_limit: Set(new.limits.tpm),
        tpm_burst: Set(new.limits.tpm_burst),
        max_concurrent: Set(new.limits.max_concurrent),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(new.tenant_id),
            action: "key.create",
            object_type: "api_key",
            object_id: public_id.clone(),
            detail: Some(serde_json::json!({
                "name": key.name, "models": new.models, "expires_at": new.expires_at,
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(CreatedKey {
        key,
        secret: SecretString::from(format!("{KEY_PREFIX}{public_id}-{secret}")),
    })
}

pub async fn find_key(
    db: &impl ConnectionTrait,
    public_id: &str,
) -> Result<Option<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::PublicId.eq(public_id))
        .one(db)
        .await?)
}

/// The key, if it exists and `scope` may see it; another tenant's key is simply not found.
pub async fn find_key_in_scope(
    db: &impl ConnectionTrait,
    scope: Scope,
    public_id: &str,
) -> Result<api_key::Model> {
    find_key(db, public_id)
        .await?
        .filter(|k| scope.covers(k.tenant_id))
        .ok_or(AdminError::NotFound("key"))
}

pub async fn list_keys(db: &impl ConnectionTrait, tenant_id: i64) -> Result<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .order_by_asc(api_key::Column::CreatedAt)
        .order_by_asc(api_key::Column::Id)
        .all(db)
        .await?)
}

/// Revoke a key (idempotent: revoking twice keeps the first time). Takes effect on every server
/// within the auth cache's refresh interval.
pub async fn revoke_key(
    db: &impl TransactionTrait,
    scope: Scope,
    public_id: &str,
    actor: &Actor,
) -> Result<api_key::Model> {
    let txn = crate::db::begin_write(db).await?;
    let key = find_key_in_scope(&txn, scope, public_id).await?;
    if key.revoked_at.is_some() {
        txn.commit().await?;
        return Ok(key);
    }
    let tenant_id = key.tenant_id;
    let now = Utc::now();
    let mut active = key.into_active_model();
    active.revoked_at = Set(Some(now));
    active.updated_at = Set(now);
    let key = active.update(&txn).await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(tenant_id),
            action: "key.revoke",
            object_type: "api_key",
            object_id: public_id.to_string(),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(key)
}

/// Whether a key can be used now.
pub fn is_active(key: &api_key::Model, now: DateTime<Utc>) -> bool {
    key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_malformed_ones_do_not() {
        let secret = random_secret();
        assert_eq!(secret.len(), 43);
        let id = random_id(PUBLIC_ID_LEN);
        let key = format!("{KEY_PREFIX}{id}-{secret}");
        assert_eq!(
            parse_key(&key),
            Some(ParsedKey {
                public_id: &id,
                secret: &secret
            })
        );
        for bad in [
            "",
            "sk-aiaas-",
            &format!("sk-other-{id}-{secret}"),
            &format!("{KEY_PREFIX}{id}"),
            &format!("{KEY_PREFIX}SHORT-{secret}"),
            &format!("{KEY_PREFIX}{id}-short"),
            &format!("{KEY_PREFIX}{id}-{secret}%"),
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn secret_hashes_round_trip_through_hex() {
        let hash = hash_secret("abc");
        assert_eq!(
            hex(&hash),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_hex32(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex32("zz"), None);
    }
}
