//! Model prices: per model, input and output per million tokens in integer micro-units, each
//! price in force from its `effective_from` until the next one. History is kept and never
//! rewritten; a price can only start now or later, so no recorded event is ever repriced.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Set, TransactionTrait};

use crate::audit::{self, Actor, Event};
use crate::entity::model_price;
use crate::error::{AdminError, Result};
use crate::Text;

/// Parse a money amount written by a person (`0.15`, `2`, `1.234567`) into micro-units.
pub fn parse_micros(text: &str) -> Result<i64> {
    let text = text.trim();
    let bad = || {
        AdminError::invalid(
            "amount",
            Text::new(
                format!("`{text}` is not an amount: use digits with at most 6 decimals, like 0.15"),
                format!("`{text}` 不是有效金额：请填写最多 6 位小数的数字，例如 0.15"),
            ),
        )
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || fraction.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(bad)
}

/// Micro-units as a decimal string with six decimals (`1234567` → `1.234567`): exact, no float.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// The cost of a request: tokens × price per million, rounded half up to a micro-unit.
pub fn cost_micros(price: &model_price::Model, prompt: i64, completion: i64) -> i64 {
    let units = prompt as i128 * price.input_micros_per_mtok as i128
        + completion as i128 * price.output_micros_per_mtok as i128;
    ((units + 500_000) / 1_000_000) as i64
}

/// Set the price of `model` from `from` (default: now) on.
pub async fn insert_price(
    db: &impl TransactionTrait,
    model: &str,
    input_micros_per_mtok: i64,
    output_micros_per_mtok: i64,
    from: Option<DateTime<Utc>>,
    actor: &Actor,
) -> Result<model_price::Model> {
    let now = Utc::now();
    let from = from.unwrap_or(now);
    if model.trim().is_empty() {
        return Err(AdminError::invalid(
            "model",
            Text::new("name the model", "请填写模型名称"),
        ));
    }
    if input_micros_per_mtok < 0 || output_micros_per_mtok < 0 {
        return Err(AdminError::invalid(
            "price",
            Text::new("a price cannot be negative", "价格不能为负数"),
        ));
    }
    // A minute of slack for the clock of whoever typed the date.
    if from < now - chrono::Duration::minutes(1) {
        return Err(AdminError::invalid(
            "from",
            Text::new(
                "a price cannot start in the past: recorded usage keeps the price it was billed at",
                "价格不能从过去开始生效：已记录的用量保持计费时的价格",
            ),
        ));
    }
    let txn = crate::db::begin_write(db).await?;
    let saved = model_price::ActiveModel {
        model: Set(model.to_string()),
        input_micros_per_mtok: Set(input_micros_per_mtok),
        output_micros_per_mtok: Set(output_micros_per_mtok),
        effective_from: Set(from),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: None,
            action: "price.set",
            object_type: "model_price",
            object_id: saved.id.to_string(),
            detail: Some(serde_json::json!({
                "model": model, "input_micros_per_mtok": input_micros_per_mtok,
                "output_micros_per_mtok": output_micros_per_mtok, "effective_from": from,
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(saved)
}

/// Every price, by model then start.
pub async fn list_prices(db: &impl ConnectionTrait) -> Result<Vec<model_price::Model>> {
    Ok(model_price::Entity::find()
        .order_by_asc(model_price::Column::Model)
        .order_by_asc(model_price::Column::EffectiveFrom)
        .all(db)
        .await?)
}

/// The price of `model` in force at `at` among `prices` (sorted as `list_prices` returns them).
pub fn price_at<'a>(
    prices: &'a [model_price::Model],
    model: &str,
    at: DateTime<Utc>,
) -> Option<&'a model_price::Model> {
    prices
        .iter()
        .filter(|p| p.model == model && p.effective_from <= at)
        .max_by_key(|p| p.effective_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_and_written_exactly() {
        assert_eq!(parse_micros("0.15").unwrap(), 150_000);
        assert_eq!(parse_micros("2").unwrap(), 2_000_000);
        assert_eq!(parse_micros("1.234567").unwrap(), 1_234_567);
        assert_eq!(parse_micros(".5").unwrap(), 500_000);
        for bad in ["", ".", "1.2345678", "-1", "1e3", "abc", "1.2.3"] {
            assert!(parse_micros(bad).is_err(), "{bad}");
        }
        assert_eq!(format_micros(1_234_567), "1.234567");
        assert_eq!(format_micros(5), "0.000005");
        assert_eq!(format_micros(-1_500_000), "-1.500000");
    }

    #[test]
    fn cost_rounds_half_up_to_a_micro_unit() {
        let price = model_price::Model {
            id: 1,
            model: "m".into(),
            input_micros_per_mtok: 150_000,  // 0.15 per million
            output_micros_per_mtok: 600_000, // 0.60 per million
            effective_from: Utc::now(),
            created_at: Utc::now(),
        };
        // 1000 × 0.15 + 500 × 0.60 = 450,000,000 micro-units per million → 450 µ.
        assert_eq!(cost_micros(&price, 1000, 500), 450);
        // 3 × 150,000 = 450,000 → 0.45 µ rounds to 0; 4 × → 0.6 rounds to 1.
        assert_eq!(cost_micros(&price, 3, 0), 0);
        assert_eq!(cost_micros(&price, 4, 0), 1);
    }
}
