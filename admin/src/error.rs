//! `AdminError`: what the control plane's services can refuse. The server and the CLI map it to
//! their own outputs (HTTP status / exit message) in one place each.

use sea_orm::{DbErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Input that cannot be accepted; `param` names the field.
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// The object does not exist, or belongs to another tenant (indistinguishable by design).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule would be broken (a tenant or e-mail that already exists).
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[source] DbErr),
}

impl AdminError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param,
            message: message.into(),
        }
    }
}

impl From<DbErr> for AdminError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Self::Conflict("an object with the same unique name already exists".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                Self::invalid("id", "it refers to an object that does not exist")
            }
            _ => Self::Db(err),
        }
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;
