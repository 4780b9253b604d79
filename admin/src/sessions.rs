//! Console sessions and sign-in. A session is a random 256-bit token in an HttpOnly cookie; the
//! database keeps only its SHA-256, the session's CSRF token, an absolute expiry, an idle
//! timeout and where it signed in from. Signing in creates a new session (the token rotates on
//! every login); signing out or changing the password deletes sessions. Wrong passwords lock the
//! account for a while after `LOCK_AFTER` attempts, whatever the address they come from.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::{self, Actor, Event};
use crate::entity::{console_session, user};
use crate::error::{AdminError, Result};
use crate::keys::{hash_secret, hex};
use crate::users::{hash_password, verify_password};
use crate::Text;

/// Wrong passwords in a row before the account is locked.
pub const LOCK_AFTER: i32 = 5;
/// How long a locked account refuses every sign-in.
pub const LOCK_FOR: Duration = Duration::minutes(15);
/// A session is dropped after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::hours(2);
/// `last_seen_at` is written at most this often.
const TOUCH_EVERY: Duration = Duration::seconds(60);

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex(&hash_secret(token))
}

/// Where a browser signs in from (for the session list and the audit log).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What a sign-in attempt gave. The console shows the same message for every refusal.
pub enum SignIn {
    /// Signed in: the new session's cookie token.
    Ok {
        user: user::Model,
        token: SecretString,
    },
    /// Unknown e-mail, wrong password or disabled user.
    Refused,
    /// Too many wrong passwords: refused until then, even with the right one.
    Locked(DateTime<Utc>),
}

/// Check the password and open a session. Every refusal costs one Argon2 verification, so an
/// unknown e-mail answers as slowly as a wrong password.
pub async fn sign_in(
    db: &(impl ConnectionTrait + TransactionTrait),
    email: &str,
    password: &SecretString,
    origin: &Origin,
    lifetime: Duration,
) -> Result<SignIn> {
    let now = Utc::now();
    let found = crate::users::find_user_by_email(db, email).await?;
    let Some(found) = found else {
        crate::users::authenticate_user(db, email, password).await?;
        return Ok(SignIn::Refused);
    };
    // Verify even when locked: a locked account answers as slowly as any other.
    let ok = verify_password(password, &found.password_hash) && found.disabled_at.is_none();
    if let Some(until) = found.locked_until.filter(|until| *until > now) {
        return Ok(SignIn::Locked(until));
    }
    let txn = crate::db::begin_write(db).await?;
    let actor = Actor {
        label: format!("user:{}", found.email),
        user_id: Some(found.id),
        ip: origin.ip.clone(),
    };
    if !ok {
        let failures = found.failed_logins + 1;
        let locked = (failures >= LOCK_AFTER).then(|| now + LOCK_FOR);
        user::Entity::update_many()
            .col_expr(
                user::Column::FailedLogins,
                Expr::value(if locked.is_some() { 0 } else { failures }),
            )
            .col_expr(user::Column::LockedUntil, Expr::value(locked))
            .filter(user::Column::Id.eq(found.id))
            .exec(&txn)
            .await?;
        audit::insert_event(
            &txn,
            &actor,
            Event {
                tenant_id: found.tenant_id,
                action: if locked.is_some() {
                    "user.locked"
                } else {
                    "user.sign_in_failed"
                },
                object_type: "user",
                object_id: found.id.to_string(),
                detail: None,
            },
        )
        .await?;
        txn.commit().await?;
        return Ok(match locked {
            Some(until) => SignIn::Locked(until),
            None => SignIn::Refused,
        });
    }
    let token = insert_session(&txn, found.id, origin, lifetime).await?;
    let mut row = found.clone().into_active_model();
    row.failed_logins = Set(0);
    row.locked_until = Set(None);
    row.last_login_at = Set(Some(now));
    let user = row.update(&txn).await?;
    audit::insert_event(
        &txn,
        &actor,
        Event {
            tenant_id: found.tenant_id,
            action: "user.sign_in",
            object_type: "user",
            object_id: found.id.to_string(),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(SignIn::Ok { user, token })
}

/// The live session behind a cookie token, and its user (not disabled). Refreshes
/// `last_seen_at` now and then; an expired or idle session is deleted.
pub async fn find_session(
    db: &impl ConnectionTrait,
    token: &str,
) -> Result<Option<(console_session::Model, user::Model)>> {
    let now = Utc::now();
    let Some(session) = console_session::Entity::find()
        .filter(console_session::Column::TokenHash.eq(token_hash(token)))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if session.expires_at <= now || session.last_seen_at + IDLE_TIMEOUT <= now {
        console_session::Entity::delete_by_id(session.id)
            .exec(db)
            .await?;
        return Ok(None);
    }
    let Some(user) = user::Entity::find_by_id(session.user_id).one(db).await? else {
        return Ok(None);
    };
    if user.disabled_at.is_some() {
        return Ok(None);
    }
    if session.last_seen_at + TOUCH_EVERY <= now {
        console_session::Entity::update_many()
            .col_expr(console_session::Column::LastSeenAt, Expr::value(now))
            .filter(console_session::Column::Id.eq(session.id))
            .exec(db)
            .await?;
    }
    Ok(Some((session, user)))
}

/// Sign out: delete the session behind this token.
pub async fn sign_out(db: &impl ConnectionTrait, token: &str) -> Result<()> {
    console_session::Entity::delete_many()
        .filter(console_session::Column::TokenHash.eq(token_hash(token)))
        .exec(db)
        .await?;
    Ok(())
}

/// A user's live sessions, newest first.
pub async fn list_sessions(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Vec<console_session::Model>> {
    let now = Utc::now();
    Ok(console_session::Entity::find()
        .filter(console_session::Column::UserId.eq(user_id))
        .filter(console_session::Column::ExpiresAt.gt(now))
        .filter(console_session::Column::LastSeenAt.gt(now - IDLE_TIMEOUT))
        .order_by_desc(console_session::Column::LastSeenAt)
        .all(db)
        .await?)
}

/// End one of the user's own sessions (another user's session is not found).
pub async fn end_session(db: &impl ConnectionTrait, user_id: i64, session_id: i64) -> Result<()> {
    let gone = console_session::Entity::delete_many()
        .filter(console_session::Column::Id.eq(session_id))
        .filter(console_session::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    if gone.rows_affected == 0 {
        return Err(AdminError::NotFound("session"));
    }
    Ok(())
}

/// Change a user's password (the current one must be right). Every session of the user ends,
/// and a new one is opened for the browser that made the change.
pub async fn change_password(
    db: &(impl ConnectionTrait + TransactionTrait),
    user_id: i64,
    current: &SecretString,
    new: &SecretString,
    origin: &Origin,
    lifetime: Duration,
) -> Result<SecretString> {
    let found = user::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(AdminError::NotFound("user"))?;
    if !verify_password(current, &found.password_hash) {
        return Err(AdminError::invalid(
            "current_password",
            Text::new("the current password is not right", "当前密码不正确"),
        ));
    }
    crate::users::check_password_strength(new)?;
    if new.expose_secret() == current.expose_secret() {
        return Err(AdminError::invalid(
            "new_password",
            Text::new(
                "the new password must differ from the current one",
                "新密码不能与当前密码相同",
            ),
        ));
    }
    let hash = hash_password(new)?;
    let now = Utc::now();
    let txn = crate::db::begin_write(db).await?;
    let mut row = found.clone().into_active_model();
    row.password_hash = Set(hash);
    row.password_changed_at = Set(Some(now));
    row.update(&txn).await?;
    console_session::Entity::delete_many()
        .filter(console_session::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?;
    let token = insert_session(&txn, user_id, origin, lifetime).await?;
    audit::insert_event(
        &txn,
        &Actor {
            label: format!("user:{}", found.email),
            user_id: Some(user_id),
            ip: origin.ip.clone(),
        },
        Event {
            tenant_id: found.tenant_id,
            action: "user.password_change",
            object_type: "user",
            object_id: user_id.to_string(),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(token)
}

/// A new session for `user_id`; returns the cookie token (only its hash is stored).
async fn insert_session(
    db: &impl ConnectionTrait,
    user_id: i64,
    origin: &Origin,
    lifetime: Duration,
) -> Result<SecretString> {
    let now = Utc::now();
    let token = random_token();
    console_session::ActiveModel {
        token_hash: Set(token_hash(&token)),
        user_id: Set(user_id),
        csrf_token: Set(random_token()),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + lifetime),
        ip: Set(origin.ip.clone()),
        user_agent: Set(origin
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(200).collect())),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(SecretString::from(token))
}
