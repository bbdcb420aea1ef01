//! `meterd checks`: the health-check query API (`GET /api/v1/healthchecks`) as a table for people.

use anyhow::Result;
use serde_json::Value;

use crate::api_client::{render_table, Align, ApiClient};

/// Queries the API `client` reaches and renders the answer as an aligned table.
pub fn checks(client: &ApiClient, id: Option<&str>, service: Option<&str>) -> Result<String> {
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Some(id) = id {
        params.push(("id", id));
    }
    if let Some(s) = service {
        params.push(("service", s));
    }
    let body = client.get_json("/api/v1/healthchecks", &params)?;
    Ok(render(&body))
}

/// Renders `{"healthChecks": [...]}` as a table.
pub fn render(body: &Value) -> String {
    let rows: Vec<[String; 6]> = body["healthChecks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let s = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let status = match c["status"].as_u64() {
                Some(1) => "OK",
                Some(2) => "ERROR",
                _ => "UNKNOWN",
            };
            let message = if s(&c["error"]).is_empty() {
                s(&c["results"]["msg"])
            } else {
                s(&c["error"])
            };
            [
                s(&c["service"]["name"]),
                s(&c["service"]["id"]),
                s(&c["id"]),
                status.to_owned(),
                s(&c["timestamp"]),
                message.replace('\n', " "),
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "INSTANCE",
        "CHECK",
        "STATUS",
        "TIMESTAMP",
        "MESSAGE",
    ];
    let mut out = render_table(header, [Align::Left; 6], &rows);
    if rows.is_empty() {
        out.push_str("(no checks)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table() {
        let body = serde_json::json!({"healthChecks": [
            {"id": "ping", "status": 1, "timestamp": 5, "error": "",
             "service": {"id": "s-1", "name": "svc", "version": "1"}, "results": {"msg": "fine"}},
            {"id": "db", "status": 2, "timestamp": 6, "error": "refused",
             "service": {"id": "s-1", "name": "svc", "version": "1"}, "results": {}}
        ]});
        let t = render(&body);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SERVICE"));
        assert!(lines[1].contains("ping") && lines[1].contains("OK") && lines[1].contains("fine"));
        assert!(lines[2].contains("ERROR") && lines[2].ends_with("refused"));
        assert!(render(&serde_json::json!({"healthChecks": []})).contains("(no checks)"));
    }
}
