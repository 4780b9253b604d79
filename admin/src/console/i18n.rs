//! The console's two languages (English, Simplified Chinese): every visible string in one table
//! checked by the compiler (a string missing in one language does not build), the choice from a
//! cookie or `Accept-Language`, and numbers, money and times formatted for the viewer's locale
//! and time zone. Why the services refused some input is written in both languages where the
//! refusal is made (`crate::Text`), since the values it quotes are only known there.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `lang` attribute of the page.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-Hans",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "en" => Some(Lang::En),
            "zh" => Some(Lang::Zh),
            _ => None,
        }
    }

    /// The first supported language of an `Accept-Language` header, by quality.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best = (Lang::En, -1.0f32);
        for part in header.split(',') {
            let mut pieces = part.trim().split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag == "zh" || tag.starts_with("zh-") {
                Some(Lang::Zh)
            } else if tag == "en" || tag.starts_with("en-") || tag == "*" {
                Some(Lang::En)
            } else {
                None
            };
            if let Some(lang) = lang {
                if q > best.1 {
                    best = (lang, q);
                }
            }
        }
        best.0
    }

    pub fn tr(self) -> &'static Tr {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

macro_rules! strings {
    ($($name:ident: $en:expr, $zh:expr;)*) => {
        /// Every string the console shows, in one language.
        pub struct Tr { $(pub $name: &'static str,)* }
        pub static EN: Tr = Tr { $($name: $en,)* };
        pub static ZH: Tr = Tr { $($name: $zh,)* };
    };
}

strings! {
    product: "aiaas console", "aiaas 控制台";
    sign_in: "Sign in", "登录";
    sign_out: "Sign out", "退出登录";
    email: "E-mail", "电子邮箱";
    password: "Password", "密码";
    sign_in_failed: "Incorrect e-mail or password, or the account is temporarily locked. Try again later.", "邮箱或密码不正确，或账户已被临时锁定。请稍后再试。";
    sign_in_throttled: "Too many sign-in attempts from your address. Wait a minute and try again.", "来自您地址的登录尝试过多。请一分钟后再试。";
    signed_out: "You are signed out.", "您已退出登录。";
    nav_dashboard: "Dashboard", "概览";
    nav_keys: "API keys", "API 密钥";
    nav_jwt_keys: "JWT keys", "JWT 密钥";
    nav_usage: "Usage", "用量";
    nav_statements: "Statements", "账单";
    nav_tenants: "Tenants", "租户";
    nav_prices: "Models & prices", "模型与价格";
    nav_users: "Users", "用户";
    nav_audit: "Audit log", "审计日志";
    nav_account: "Account", "账户";
    role_operator: "Operator", "运营管理员";
    role_tenant_admin: "Tenant admin", "租户管理员";
    role_finance: "Finance", "财务";
    language: "Language", "语言";
    time_zone: "Time zone", "时区";
    all_tenants: "All tenants", "全部租户";
    tenant: "Tenant", "租户";
    range_24h: "Last 24 hours", "最近 24 小时";
    range_7d: "Last 7 days", "最近 7 天";
    range_30d: "Last 30 days", "最近 30 天";
    requests: "Requests", "请求数";
    tokens: "Tokens", "Token 数";
    prompt_tokens: "Prompt tokens", "输入 Token";
    completion_tokens: "Completion tokens", "输出 Token";
    total_tokens: "Total tokens", "Token 总数";
    spend: "Spend", "花费";
    cost: "Cost", "费用";
    errors: "Errors", "错误";
    error_rate: "Error rate", "错误率";
    per_model: "By model", "按模型";
    model: "Model", "模型";
    no_data: "No usage in this period yet.", "此期间暂无用量。";
    keys_title: "API keys", "API 密钥";
    keys_intro: "Keys authenticate applications to the OpenAI-compatible API. A key's secret is shown once, when it is created or rotated.", "密钥用于应用调用兼容 OpenAI 的 API。密钥只在创建或轮换时显示一次。";
    search: "Search", "搜索";
    search_keys: "Name or prefix", "名称或前缀";
    status: "Status", "状态";
    status_all: "All", "全部";
    status_active: "Active", "有效";
    status_revoked: "Revoked", "已吊销";
    status_expired: "Expired", "已过期";
    name: "Name", "名称";
    prefix: "Prefix", "前缀";
    created: "Created", "创建时间";
    last_used: "Last used", "最近使用";
    expires: "Expires", "过期时间";
    never: "Never", "从不";
    limits: "Limits", "限额";
    no_limits: "No limits", "不限";
    create_key: "Create key", "创建密钥";
    new_key: "New API key", "新建 API 密钥";
    models_allowed: "Models allowed", "允许的模型";
    models_allowed_help: "Comma-separated model ids; leave empty to allow every model.", "以逗号分隔的模型 ID；留空表示允许所有模型。";
    every_model: "Every model", "所有模型";
    expires_help: "Leave empty for a key that never expires.", "留空表示永不过期。";
    rpm: "Requests per minute", "每分钟请求数";
    tpm: "Tokens per minute", "每分钟 Token 数";
    max_concurrent: "Concurrent requests", "并发请求数";
    unlimited_help: "Empty means no limit (the tenant's limits still apply).", "留空表示不限（租户限额仍然生效）。";
    key_created: "Your new API key", "您的新 API 密钥";
    key_rotated: "The key's new secret", "密钥的新密文";
    shown_once: "Copy it now: it is shown only this once and cannot be shown again.", "请立即复制：它只显示这一次，之后无法再次查看。";
    copy: "Copy", "复制";
    copied: "Copied", "已复制";
    done: "Done", "完成";
    back_to_keys: "Back to API keys", "返回 API 密钥";
    save: "Save", "保存";
    cancel: "Cancel", "取消";
    edit_key: "Edit", "编辑";
    rotate: "Rotate", "轮换";
    rotate_help: "Issue a new secret. The old one keeps working for the grace period, then stops.", "签发新的密文。旧密文在宽限期内仍可使用，之后失效。";
    grace: "Grace period", "宽限期";
    grace_none: "None (stop the old secret now)", "无（立即停用旧密文）";
    grace_1h: "1 hour", "1 小时";
    grace_24h: "24 hours", "24 小时";
    grace_7d: "7 days", "7 天";
    revoke: "Revoke", "吊销";
    revoke_confirm: "Revoke this key? Every application using it will be refused at once. This cannot be undone.", "确定吊销此密钥？所有使用它的应用将立即被拒绝。此操作无法撤销。";
    revoke_yes: "Yes, revoke the key", "确认吊销";
    key_revoked: "The key was revoked.", "密钥已吊销。";
    key_saved: "The key was saved.", "密钥已保存。";
    limits_saved: "The limits were saved.", "限额已保存。";
    previous_secret_until: "Previous secret accepted until", "旧密文有效期至";
    mint_token: "Short-lived token", "短期令牌";
    mint_token_help: "A JWT signed by this server for this key, for a client that should not hold the key itself.", "由本服务器为此密钥签发的 JWT，适用于不应持有密钥本身的客户端。";
    lifetime: "Lifetime", "有效期";
    end_user: "End user", "终端用户";
    mint: "Create token", "生成令牌";
    token_created: "Your token", "您的令牌";
    budget: "Budget", "预算";
    budget_help: "Refuse requests once this much is spent in the period.", "本周期内花费达到此额度后拒绝请求。";
    amount: "Amount", "额度";
    period: "Period", "周期";
    monthly: "Monthly", "每月";
    budget_saved: "The budget was saved.", "预算已保存。";
    spent: "Spent", "已花费";
    jwt_title: "JWT verification keys", "JWT 验证密钥";
    jwt_intro: "Register the public key (or shared secret) your own identity service signs tokens with; tokens it signs then authenticate to the API as your tenant.", "登记您自己的身份服务签发令牌所用的公钥（或共享密钥）；经其签名的令牌即可作为本租户调用 API。";
    algorithm: "Algorithm", "算法";
    public_key_pem: "Public key (PEM)", "公钥（PEM）";
    issuer: "Issuer (iss)", "签发者（iss）";
    audience: "Audience (aud)", "受众（aud）";
    add_key: "Add key", "添加密钥";
    generate_hs256: "Generate an HS256 secret", "生成 HS256 密钥";
    enabled: "Enabled", "已启用";
    disabled: "Disabled", "已停用";
    disable: "Disable", "停用";
    enable: "Enable", "启用";
    secret_created: "Your HS256 secret", "您的 HS256 密钥";
    usage_title: "Usage explorer", "用量明细";
    from: "From", "开始";
    to: "To", "结束";
    group_by: "Group by", "分组依据";
    group_day: "Day", "日期";
    group_key: "API key", "API 密钥";
    group_model: "Model", "模型";
    group_user: "End user", "终端用户";
    group_endpoint: "Endpoint", "接口";
    any: "Any", "全部";
    errors_only: "Only groups with errors", "仅含错误的分组";
    apply: "Apply", "应用";
    download_csv: "Download CSV", "下载 CSV";
    total: "Total", "合计";
    dates_utc: "Days are UTC days, as in the exports.", "日期按 UTC 计算，与导出一致。";
    statements_title: "Monthly statements", "月度账单";
    month: "Month", "月份";
    view: "View", "查看";
    print: "Print", "打印";
    tenants_title: "Tenants", "租户";
    create_tenant: "Create tenant", "创建租户";
    suspend: "Suspend", "暂停";
    resume: "Resume", "恢复";
    suspended: "Suspended", "已暂停";
    active: "Active", "正常";
    keys_count: "Keys", "密钥";
    tenant_saved: "The tenant was saved.", "租户已保存。";
    prices_title: "Models and prices", "模型与价格";
    prices_intro: "Prices per million tokens. A new price applies from its effective date on; past requests keep the price they were billed at.", "按每百万 Token 计价。新价格自生效日期起适用；过往请求保持当时的计费价格。";
    input_price: "Input / 1M tokens", "输入 / 百万 Token";
    output_price: "Output / 1M tokens", "输出 / 百万 Token";
    effective_from: "Effective from", "生效时间";
    set_price: "Set price", "设置价格";
    price_saved: "The price was saved.", "价格已保存。";
    users_title: "Users", "用户";
    role: "Role", "角色";
    create_user: "Create user", "创建用户";
    user_saved: "The user was saved.", "用户已保存。";
    last_sign_in: "Last sign-in", "最近登录";
    audit_title: "Audit log", "审计日志";
    when: "When", "时间";
    actor: "Actor", "操作者";
    action: "Action", "操作";
    object: "Object", "对象";
    details: "Details", "详情";
    ip: "IP", "IP";
    account_title: "Your account", "您的账户";
    change_password: "Change password", "修改密码";
    current_password: "Current password", "当前密码";
    new_password: "New password (at least 12 characters)", "新密码（至少 12 个字符）";
    password_changed: "Your password was changed; your other sessions were signed out.", "密码已修改；其他会话均已退出。";
    sessions: "Sessions", "会话";
    this_session: "This session", "当前会话";
    end_session: "Sign out", "退出";
    session_ended: "The session was signed out.", "该会话已退出。";
    browser: "Browser", "浏览器";
    previous: "Previous", "上一页";
    next: "Next", "下一页";
    page_of: "Page", "页";
    showing: "Showing", "显示";
    of: "of", "共";
    not_found_title: "Not found", "未找到";
    not_found_text: "This page does not exist, or you may not see it.", "该页面不存在，或您无权查看。";
    forbidden_title: "Request refused", "请求被拒绝";
    forbidden_text: "The form was too old or did not come from this console. Go back, reload the page and try again.", "表单已过期或并非来自本控制台。请返回、刷新页面后重试。";
    error_title: "Something went wrong", "出现错误";
    error_text: "The console could not complete this request. Try again in a moment.", "控制台无法完成此请求。请稍后重试。";
    invalid_input: "Please check the form", "请检查表单";
    colon: ": ", "：";
    home: "Dashboard", "返回概览";
    statement_title: "Usage statement", "用量账单";
    period_label: "Period", "期间";
    currency: "Currency", "币种";
    never_used: "Not used yet", "尚未使用";
    tenant_limits: "Tenant limits", "租户限额";
}

/// Which locale formats numbers and dates.
pub fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Money from micro-units, exact: at least two decimals, more only when they are not zero
/// (`12_340_000` → `12.34`, `123` → `0.000123`), with the currency's sign for the locale.
pub fn money(lang: Lang, currency: &str, micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let mut fraction = format!("{:06}", abs % 1_000_000);
    while fraction.len() > 2 && fraction.ends_with('0') {
        fraction.pop();
    }
    let amount = format!("{}.{fraction}", group_thousands((abs / 1_000_000) as i64));
    let symbol = match (currency.to_ascii_lowercase().as_str(), lang) {
        ("usd", Lang::En) => "$".to_string(),
        ("usd", Lang::Zh) => "US$".to_string(),
        ("eur", _) => "€".to_string(),
        ("cny", _) => "¥".to_string(),
        ("gbp", _) => "£".to_string(),
        (other, _) => format!("{} ", other.to_uppercase()),
    };
    format!("{sign}{symbol}{amount}")
}

/// A percentage with one decimal.
pub fn percent(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "0.0%".into();
    }
    let tenths = (part * 1000 + whole / 2) / whole;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// A time in the viewer's zone, written for the locale.
pub fn datetime(lang: Lang, tz: Tz, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&tz);
    match lang {
        Lang::En => local.format("%b %-d, %Y %H:%M").to_string(),
        Lang::Zh => local.format("%Y年%-m月%-d日 %H:%M").to_string(),
    }
}

/// A day (no time), in the locale.
pub fn date(lang: Lang, tz: Tz, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&tz);
    match lang {
        Lang::En => local.format("%b %-d, %Y").to_string(),
        Lang::Zh => local.format("%Y年%-m月%-d日").to_string(),
    }
}

/// A UTC day (rollups are UTC days) in the locale.
pub fn utc_day(lang: Lang, at: DateTime<Utc>) -> String {
    date(lang, Tz::UTC, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(
            Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Lang::Zh
        );
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,zh;q=0.5"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language("fr-FR,zh-Hans;q=0.7"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("fr-FR"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn money_is_exact_and_localised() {
        assert_eq!(money(Lang::En, "usd", 12_340_000), "$12.34");
        assert_eq!(money(Lang::Zh, "usd", 12_340_000), "US$12.34");
        assert_eq!(money(Lang::En, "usd", 123), "$0.000123");
        assert_eq!(money(Lang::En, "eur", 1_234_567_890_000), "€1,234,567.89");
        assert_eq!(money(Lang::En, "chf", 0), "CHF 0.00");
        assert_eq!(group_thousands(-1_234_567), "-1,234,567");
        assert_eq!(percent(1, 3), "33.3%");
    }

    #[test]
    fn times_are_shown_in_the_viewers_zone() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 23, 30, 0).unwrap();
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(datetime(Lang::En, Tz::UTC, at), "Nov 24, 2026 23:30");
        assert_eq!(datetime(Lang::Zh, shanghai, at), "2026年11月25日 07:30");
    }
}
