//! sea-orm entities of the control plane, one module per table (schema: `aiaas-migrations`).

pub mod api_key;
pub mod audit_log;
pub mod budget;
pub mod budget_reservation;
pub mod budget_usage;
pub mod console_session;
pub mod jwt_key;
pub mod model_price;
pub mod tenant;
pub mod usage_event;
pub mod usage_rollup;
pub mod user;
