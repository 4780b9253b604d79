//! Console users: operators (the platform), tenant admins and finance (within one tenant).
//! Passwords are hashed with Argon2id; they never leave this module in clear.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::{self, Actor, Event};
use crate::entity::user;
use crate::error::{AdminError, Result};
use crate::Text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the platform: every tenant.
    Operator,
    /// Manages the keys of one tenant.
    TenantAdmin,
    /// Reads usage and exports of one tenant.
    Finance,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant_admin",
            Role::Finance => "finance",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "operator" => Ok(Role::Operator),
            "tenant_admin" => Ok(Role::TenantAdmin),
            "finance" => Ok(Role::Finance),
            other => Err(AdminError::invalid(
                "role",
                Text::new(
                    format!("unknown role `{other}`: use operator, tenant_admin or finance"),
                    format!("未知角色 `{other}`：请使用 operator、tenant_admin 或 finance"),
                ),
            )),
        }
    }
}

pub struct NewUser {
    pub email: String,
    pub password: SecretString,
    pub role: Role,
    pub tenant_id: Option<i64>,
}

const MIN_PASSWORD: usize = 12;

/// A password long enough to resist guessing (length is what matters; no composition rules).
pub fn check_password_strength(password: &SecretString) -> Result<()> {
    let chars = password.expose_secret().chars().count();
    if chars < MIN_PASSWORD {
        return Err(AdminError::invalid(
            "password",
            Text::new(
                format!("the password must have at least {MIN_PASSWORD} characters"),
                format!("密码至少需要 {MIN_PASSWORD} 个字符"),
            ),
        ));
    }
    if chars > 1024 {
        return Err(AdminError::invalid(
            "password",
            Text::new(
                "the password may have at most 1024 characters",
                "密码最多 1024 个字符",
            ),
        ));
    }
    Ok(())
}

pub fn hash_password(password: &SecretString) -> Result<String> {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| {
        AdminError::invalid(
            "password",
            Text::new(
                format!("cannot salt the password: {e}"),
                format!("无法为密码生成盐值：{e}"),
            ),
        )
    })?;
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            AdminError::invalid(
                "password",
                Text::new(
                    format!("cannot hash the password: {e}"),
                    format!("无法计算密码哈希：{e}"),
                ),
            )
        })
}

/// Constant-time check of a password against a stored Argon2id PHC string.
pub fn verify_password(password: &SecretString, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub async fn insert_user(
    db: &impl TransactionTrait,
    new: NewUser,
    actor: &Actor,
) -> Result<user::Model> {
    let email = new.email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 || email.contains(char::is_whitespace) {
        return Err(AdminError::invalid(
            "email",
            Text::new(
                format!("`{email}` is not an e-mail address"),
                format!("`{email}` 不是有效的电子邮件地址"),
            ),
        ));
    }
    match (new.role, new.tenant_id) {
        (Role::Operator, Some(_)) => {
            return Err(AdminError::invalid(
                "tenant",
                Text::new(
                    "an operator belongs to no tenant",
                    "运营管理员不属于任何租户",
                ),
            ))
        }
        (Role::TenantAdmin | Role::Finance, None) => {
            return Err(AdminError::invalid(
                "tenant",
                Text::new(
                    format!("a {} user needs a tenant", new.role.as_str()),
                    format!("{} 用户必须属于一个租户", new.role.as_str()),
                ),
            ))
        }
        _ => {}
    }
    check_password_strength(&new.password)?;
    let hash = hash_password(&new.password)?;
    let txn = crate::db::begin_write(db).await?;
    if find_user_by_email(&txn, &email).await?.is_some() {
        return Err(AdminError::Conflict(Text::new(
            format!("a user with e-mail `{email}` already exists"),
            format!("电子邮件为 `{email}` 的用户已存在"),
        )));
    }
    let created = user::ActiveModel {
        email: Set(email.clone()),
        password_hash: Set(hash),
        role: Set(new.role.as_str().into()),
        tenant_id: Set(new.tenant_id),
        created_at: Set(chrono::Utc::now()),
        disabled_at: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: new.tenant_id,
            action: "user.create",
            object_type: "user",
            object_id: created.id.to_string(),
            detail: Some(serde_json::json!({ "email": email, "role": new.role.as_str() })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(created)
}

pub async fn find_user_by_email(
    db: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email.trim().to_lowercase()))
        .one(db)
        .await?)
}

/// The user with this e-mail and password, if both match and the user is not disabled.
/// Unknown e-mails cost the same hash as known ones, so timing does not reveal accounts.
pub async fn authenticate_user(
    db: &impl ConnectionTrait,
    email: &str,
    password: &SecretString,
) -> Result<Option<user::Model>> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let user = find_user_by_email(db, email).await?;
    let phc = match &user {
        Some(u) => u.password_hash.clone(),
        None => DUMMY
            .get_or_init(|| {
                hash_password(&SecretString::from("not-a-real-password")).unwrap_or_default()
            })
            .clone(),
    };
    let ok = verify_password(password, &phc);
    Ok(user.filter(|u| ok && u.disabled_at.is_none()))
}

/// Console users `scope` may see: every user for the platform, the tenant's users otherwise.
pub async fn list_users(
    db: &impl ConnectionTrait,
    scope: crate::Scope,
) -> Result<Vec<user::Model>> {
    use sea_orm::QueryOrder;
    let mut query = user::Entity::find();
    if let crate::Scope::Tenant(tenant) = scope {
        query = query.filter(user::Column::TenantId.eq(tenant));
    }
    Ok(query.order_by_asc(user::Column::Id).all(db).await?)
}

/// Disable (signing out every session) or re-enable a user in `scope`.
pub async fn set_user_disabled(
    db: &impl TransactionTrait,
    scope: crate::Scope,
    user_id: i64,
    disabled: bool,
    actor: &Actor,
) -> Result<user::Model> {
    use sea_orm::IntoActiveModel;
    let txn = crate::db::begin_write(db).await?;
    let found = user::Entity::find_by_id(user_id)
        .one(&txn)
        .await?
        .filter(|u| match scope {
            crate::Scope::Platform => true,
            crate::Scope::Tenant(t) => u.tenant_id == Some(t),
        })
        .ok_or(AdminError::NotFound("user"))?;
    if actor.user_id == Some(user_id) && disabled {
        return Err(AdminError::invalid(
            "user",
            Text::new("you cannot disable yourself", "不能停用您自己的账户"),
        ));
    }
    let tenant_id = found.tenant_id;
    let mut row = found.into_active_model();
    row.disabled_at = Set(disabled.then(chrono::Utc::now));
    let updated = row.update(&txn).await?;
    if disabled {
        crate::entity::console_session::Entity::delete_many()
            .filter(crate::entity::console_session::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
    }
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id,
            action: if disabled {
                "user.disable"
            } else {
                "user.enable"
            },
            object_type: "user",
            object_id: user_id.to_string(),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_argon2id_and_verify() {
        let password = SecretString::from("correct horse battery");
        let phc = hash_password(&password).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&password, &phc));
        assert!(!verify_password(
            &SecretString::from("wrong horse battery"),
            &phc
        ));
        assert!(!verify_password(&password, "not a hash"));
    }
}
