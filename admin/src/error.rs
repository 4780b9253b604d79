//! `AdminError`: what the control plane's services can refuse. The server and the CLI map it to
//! their own outputs (HTTP status / exit message) in one place each.

use sea_orm::{DbErr, SqlErr};
use std::fmt;

/// A message for a person, written in each language the console speaks. English is what the
/// CLI, the logs and `Display` show; the console picks the viewer's language. Both are written
/// where the message is made, so a message without its translation does not build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub en: String,
    pub zh: String,
}

impl Text {
    pub fn new(en: impl Into<String>, zh: impl Into<String>) -> Self {
        Self {
            en: en.into(),
            zh: zh.into(),
        }
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.en)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Input that cannot be accepted; `param` names the field.
    #[error("{message}")]
    Invalid { param: &'static str, message: Text },
    /// The object does not exist, or belongs to another tenant (indistinguishable by design).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule would be broken (a tenant or e-mail that already exists).
    #[error("{0}")]
    Conflict(Text),
    #[error("database error: {0}")]
    Db(#[source] DbErr),
}

impl AdminError {
    pub fn invalid(param: &'static str, message: Text) -> Self {
        Self::Invalid { param, message }
    }
}

impl From<DbErr> for AdminError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => Self::Conflict(Text::new(
                "an object with the same unique name already exists",
                "已存在同名的对象",
            )),
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => Self::invalid(
                "id",
                Text::new(
                    "it refers to an object that does not exist",
                    "引用的对象不存在",
                ),
            ),
            _ => Self::Db(err),
        }
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;
