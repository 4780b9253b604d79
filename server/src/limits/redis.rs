//! Limits shared by every replica: one Lua script per check runs atomically in Redis, on Redis's
//! own clock (`TIME`), with the same bucket arithmetic as `bucket.rs`. Concurrency slots are
//! leases in a sorted set (score = expiry), so a replica that dies frees its slots after
//! `lease`. Keys: `<prefix>:rl:<k|t>:<id>:<r|t|c>`, expiring once a bucket would be full again.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::bucket::{Bucket, Rate};
use super::local::rates;
use super::{Backend, Dimension, Grant, Outcome, RateHeaders, RedisSettings, Refusal, Subject};

/// ARGV: mode (acquire | release | peek), lease, lease µs, tokens, used, refund request (0/1),
/// subject count, then per subject: rpm, rpm burst, tpm, tpm burst, max concurrent (-1: none).
/// KEYS: per subject the requests bucket, tokens bucket and lease set.
/// Returns: [admitted 0/1, refusal subject, refusal dimension, wait µs (-1: never), now µs,
///           then per subject: requests level, tokens level (as strings)].
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local MIN = 60000000
local mode, lease, lease_us = ARGV[1], ARGV[2], tonumber(ARGV[3])
local tokens, used, refund_request = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local n = tonumber(ARGV[7])

local function level(key, per_min, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  if not v[1] then return cap end
  local l = tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * per_min / MIN
  if l > cap then l = cap end
  return l
end
local function wait(units, per_min) return math.ceil(units * MIN / per_min) end
local function store(key, l, per_min, cap)
  redis.call('HSET', key, 'l', tostring(l), 't', string.format('%d', now))
  redis.call('PEXPIRE', key, math.ceil((cap - l) * 60000 / per_min) + 1000)
end

local refusal = nil
local levels = {}
for i = 0, n - 1 do
  local a = 8 + i * 5
  local rpm, rcap = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local tpm, tcap = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local conc = tonumber(ARGV[a + 4])
  local kr, kt, kc = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local rl, tl = -1, -1
  if rpm >= 0 then rl = level(kr, rpm, rcap) end
  if tpm >= 0 then tl = level(kt, tpm, tcap) end
  if mode == 'acquire' then
    if conc >= 0 then
      redis.call('ZREMRANGEBYSCORE', kc, '-inf', string.format('%d', now))
      if redis.call('ZCARD', kc) >= conc and not refusal then refusal = {i, 3, 1000000} end
    end
    if rpm >= 0 and rl < 1 and not refusal then refusal = {i, 1, wait(1 - rl, rpm)} end
    if tpm >= 0 and tokens > 0 and not refusal then
      if tokens > tcap then refusal = {i, 4, -1}
      elseif tokens > tl then refusal = {i, 2, wait(tokens - tl, tpm)} end
    end
  elseif mode == 'release' then
    if conc >= 0 then redis.call('ZREM', kc, lease) end
    if tpm >= 0 and tokens > 0 then
      tl = math.min(tcap, tl + tokens - used)
      store(kt, tl, tpm, tcap)
    end
    if rpm >= 0 and refund_request then
      rl = math.min(rcap, rl + 1)
      store(kr, rl, rpm, rcap)
    end
  end
  levels[i + 1] = {rpm, rcap, tpm, tcap, conc, rl, tl, kr, kt, kc}
end

if mode == 'acquire' and not refusal then
  for i = 1, n do
    local s = levels[i]
    if s[1] >= 0 then s[6] = s[6] - 1; store(s[8], s[6], s[1], s[2]) end
    if s[3] >= 0 and tokens > 0 then s[7] = s[7] - tokens; store(s[9], s[7], s[3], s[4]) end
    if s[5] >= 0 then
      redis.call('ZADD', s[10], string.format('%d', now + lease_us), lease)
      redis.call('PEXPIRE', s[10], math.ceil(lease_us / 1000) + 1000)
    end
  end
end

local out = {'0', '-1', '0', '0', string.format('%d', now)}
if mode ~= 'acquire' or not refusal then out[1] = '1' end
if refusal then
  out[2] = tostring(refusal[1]); out[3] = tostring(refusal[2])
  out[4] = string.format('%d', refusal[3])
end
for i = 1, n do
  table.insert(out, tostring(levels[i][6]))
  table.insert(out, tostring(levels[i][7]))
end
return out
"#;

pub(super) struct Shared {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    lease: Duration,
}

fn arg(value: Option<i64>) -> i64 {
    value.unwrap_or(-1)
}

impl Shared {
    /// Connects lazily: the server starts (with per-process limits) while Redis is down.
    pub fn new(settings: RedisSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| anyhow::anyhow!("limits.redis_url is not a Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("Redis client: {e}"))?;
        Ok(Self {
            conn,
            script: Script::new(SCRIPT),
            prefix: settings.prefix,
            lease: settings.lease,
        })
    }

    async fn run(
        &self,
        mode: &str,
        subjects: &[Subject],
        lease: &str,
        tokens: u64,
        used: u64,
        refund_request: bool,
    ) -> Result<Vec<String>, RedisError> {
        let mut call = self.script.prepare_invoke();
        for s in subjects {
            for part in ['r', 't', 'c'] {
                call.key(format!(
                    "{}:rl:{}:{}:{part}",
                    self.prefix,
                    s.kind.tag(),
                    s.id
                ));
            }
        }
        call.arg(mode)
            .arg(lease)
            .arg(self.lease.as_micros() as i64)
            .arg(tokens)
            .arg(used)
            .arg(if refund_request { 1 } else { 0 })
            .arg(subjects.len());
        for s in subjects {
            let l = &s.limits;
            call.arg(arg(l.rpm))
                .arg(arg(l.rpm_burst.or(l.rpm)))
                .arg(arg(l.tpm))
                .arg(arg(l.tpm_burst.or(l.tpm)))
                .arg(arg(l.max_concurrent));
        }
        let mut conn = self.conn.clone();
        call.invoke_async(&mut conn).await
    }

    pub async fn acquire(
        &self,
        subjects: &[Subject],
        tokens: u64,
        lease: &str,
    ) -> Result<Outcome, RedisError> {
        let out = self
            .run("acquire", subjects, lease, tokens, 0, false)
            .await?;
        let (admitted, refusal, headers) = parse(&out, subjects, tokens)?;
        Ok(match (admitted, refusal) {
            (true, _) | (false, None) => Outcome::Admitted(
                Grant {
                    backend: Backend::Redis,
                    lease: lease.to_string(),
                    subjects: subjects.to_vec(),
                    tokens,
                },
                headers,
            ),
            (false, Some(refusal)) => Outcome::Refused(refusal, headers),
        })
    }

    pub async fn release(
        &self,
        grant: &Grant,
        used: u64,
        refund_request: bool,
    ) -> Result<(), RedisError> {
        self.run(
            "release",
            &grant.subjects,
            &grant.lease,
            grant.tokens,
            used,
            refund_request,
        )
        .await
        .map(|_| ())
    }

    pub async fn peek(&self, subjects: &[Subject]) -> Result<RateHeaders, RedisError> {
        let out = self.run("peek", subjects, "", 0, 0, false).await?;
        Ok(parse(&out, subjects, 0)?.2)
    }
}

fn bad_reply() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected rate-limit script reply",
    ))
}

/// Read the script's reply: admitted, the refusal, and the headers (levels after the call).
fn parse(
    out: &[String],
    subjects: &[Subject],
    tokens: u64,
) -> Result<(bool, Option<Refusal>, RateHeaders), RedisError> {
    let num = |i: usize| -> Result<f64, RedisError> {
        out.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(bad_reply)
    };
    if out.len() != 5 + 2 * subjects.len() {
        return Err(bad_reply());
    }
    let admitted = num(0)? == 1.0;
    let now = num(4)? as i64;
    let mut headers = RateHeaders::default();
    for (i, subject) in subjects.iter().enumerate() {
        let (request_rate, token_rate) = rates(subject);
        let status = |rate: Rate, level: f64| Bucket { level, at: now }.status(rate, now);
        headers.add(
            request_rate.map(|r| status(r, num(5 + 2 * i).unwrap_or(r.capacity))),
            token_rate.map(|r| status(r, num(6 + 2 * i).unwrap_or(r.capacity))),
        );
    }
    let refusal = if admitted {
        None
    } else {
        let subject = subjects.get(num(1)? as usize).ok_or_else(bad_reply)?;
        let (dimension, limit, requested) = match num(2)? as i64 {
            1 => (Dimension::Requests, subject.limits.rpm, 1),
            2 => (Dimension::Tokens, subject.limits.tpm, tokens),
            3 => (Dimension::Concurrency, subject.limits.max_concurrent, 1),
            4 => (Dimension::TooLarge, subject.limits.tpm, tokens),
            _ => return Err(bad_reply()),
        };
        let wait = num(3)? as i64;
        Some(Refusal {
            dimension,
            kind: subject.kind,
            limit: limit.unwrap_or(0) as u64,
            requested,
            retry_after_us: (wait >= 0).then_some(wait),
        })
    };
    Ok((admitted, refusal, headers))
}
