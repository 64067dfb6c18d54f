//! `GET /v1/usage`: what WhatsApp charges the tenant in a month, counted from the pricing of
//! status webhooks, with an estimate at the tenant's rates.

use super::*;

#[derive(Deserialize)]
pub(crate) struct UsageQuery {
    month: Option<String>,
}

/// A month's usage as the API and `relay usage` show it.
pub fn usage_json(
    month: &str,
    counts: &[relay_core::usage::UsageCount],
    rates: &relay_core::usage::Rates,
) -> Value {
    let e = relay_core::usage::estimate(counts, rates);
    json!({
        "month": month,
        "currency": e.currency,
        "rows": e.rows,
        "messages": counts.iter().map(|c| c.messages).sum::<u64>(),
        "billable": counts.iter().map(|c| c.billable).sum::<u64>(),
        "estimate": e.total,
        "unpriced_categories": e.unpriced,
        "rates": {"as_of": rates.as_of, "source": rates.source, "per_category": rates.per_category},
    })
}

pub(crate) async fn get_usage(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ProblemResponse> {
    let Query(q) = query.map_err(|_| {
        detailed(
            400,
            "bad-query",
            "The query string is malformed",
            "month=YYYY-MM",
        )
    })?;
    let now = state.clock.now();
    let month = match q.month {
        Some(m) if relay_core::usage::valid_month(&m) => m,
        Some(_) => {
            return Err(detailed(
                400,
                "bad-query",
                "The query string is malformed",
                "month must look like 2026-12",
            ));
        }
        None => relay_core::usage::month_of(now).unwrap_or_default(),
    };
    let Some(usage) = &state.usage else {
        return Err(problem(503, "unavailable", "Usage is not recorded here"));
    };
    let counts = usage.usage(&tenant, &month).await.map_err(store_problem)?;
    let rates = state
        .directory
        .tenant(&tenant)
        .await
        .map_err(store_problem)?
        .map(|t| t.policy.rates)
        .unwrap_or_default();
    tracing::info!(tenant = %tenant, month = %month, rows = counts.len(), "usage read");
    Ok(ok_json(usage_json(&month, &counts, &rates)))
}
