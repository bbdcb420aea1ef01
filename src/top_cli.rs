//! `meterd top`: the current interval's cardinality (`GET /api/v1/cardinality`) as a table that
//! refreshes every second, like `top`; `--once` prints one table for scripts.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api_client::{render_table, Align, ApiClient};

/// Time between two polls of the live table.
const REFRESH: Duration = Duration::from_secs(1);

/// ANSI: cursor home, clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// The lines per name of one poll, and when it answered: the next poll's rates come from it.
struct Poll {
    at: Instant,
    lines: HashMap<String, u64>,
}

/// Shows the cardinality of the meterd `client` reaches, the `limit` largest names and tag
/// keys: once, or every second until Ctrl-C (clearing the screen first when stdout is a
/// terminal). An API that cannot be reached is an error naming it.
pub fn top(client: &ApiClient, limit: usize, once: bool) -> Result<()> {
    let api = client.base();
    let limit = limit.to_string();
    let params = [("limit", limit.as_str())];
    if once {
        let body = client.get_json("/api/v1/cardinality", &params)?;
        return show(&render(&body, api, None, unix_secs()), false);
    }
    let tty = std::io::stdout().is_terminal();
    client.runtime().block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Poll> = None;
        loop {
            let body = tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                _ = tick.tick() => tokio::select! {
                    _ = &mut ctrl_c => return Ok(()),
                    body = client.get_json_async("/api/v1/cardinality", &params) => body?,
                },
            };
            let at = Instant::now();
            let rates = previous
                .as_ref()
                .map(|p| (at.duration_since(p.at).as_secs_f64(), &p.lines));
            show(&render(&body, api, rates, unix_secs()), tty)?;
            previous = Some(Poll {
                at,
                lines: lines_by_name(&body),
            });
        }
    })
}

/// Writes one table to stdout, clearing the screen first when `clear`.
fn show(table: &str, clear: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if clear {
        out.write_all(CLEAR.as_bytes())
            .context("cannot write to stdout")?;
    }
    out.write_all(table.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lines per name of a cardinality answer.
fn lines_by_name(body: &Value) -> HashMap<String, u64> {
    metrics(body)
        .iter()
        .filter_map(|m| Some((m["name"].as_str()?.to_owned(), m["lines"].as_u64()?)))
        .collect()
}

fn metrics(body: &Value) -> &[Value] {
    body["metrics"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Renders a cardinality answer: a header line (address, UTC time of day, total series), the
/// names, then the tag keys. `previous` is the last poll's age in seconds and lines per name: a
/// name's lines/s is the growth since then (shown as `-` on the first poll, and for a name that
/// was not in it or whose count fell, as it does at a flush).
pub fn render(
    body: &Value,
    api: &str,
    previous: Option<(f64, &HashMap<String, u64>)>,
    unix_secs: u64,
) -> String {
    let day = unix_secs % 86_400;
    let mut out = format!(
        "meterd top  {api}  {:02}:{:02}:{:02} UTC  series this interval: {}\n\n",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        body["total_series"].as_u64().unwrap_or(0)
    );
    let rows: Vec<[String; 5]> = metrics(body)
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap_or_default();
            let lines = m["lines"].as_u64().unwrap_or(0);
            let rate = previous
                .and_then(|(secs, before)| {
                    let was = *before.get(name)?;
                    (lines >= was && secs > 0.0)
                        .then(|| format!("{:.0}", (lines - was) as f64 / secs))
                })
                .unwrap_or_else(|| "-".to_owned());
            let limit = if m["limited"].as_bool().unwrap_or(false) {
                format!("LIMITED, dropped {}", m["dropped"].as_u64().unwrap_or(0))
            } else {
                String::new()
            };
            [
                name.to_owned(),
                m["series"].as_u64().unwrap_or(0).to_string(),
                lines.to_string(),
                rate,
                limit,
            ]
        })
        .collect();
    let right = Align::Right;
    out.push_str(&render_table(
        ["NAME", "SERIES", "LINES", "LINES/S", "LIMIT"],
        [Align::Left, right, right, right, Align::Left],
        &rows,
    ));
    if rows.is_empty() {
        out.push_str("(no series this interval)\n");
    }
    let keys: Vec<[String; 2]> = body["tag_keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|k| {
            [
                k["key"].as_str().unwrap_or_default().to_owned(),
                k["values"].as_u64().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    if !keys.is_empty() {
        out.push('\n');
        out.push_str(&render_table(
            ["TAG KEY", "VALUES"],
            [Align::Left, right],
            &keys,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        serde_json::json!({
            "total_series": 1203,
            "metrics": [
                {"name": "api.requests", "series": 1200, "lines": 5000, "limited": true, "dropped": 7},
                {"name": "db.latency", "series": 3, "lines": 40, "limited": false, "dropped": 0}
            ],
            "tag_keys": [{"key": "user_id", "values": 1200}, {"key": "env", "values": 2}]
        })
    }

    #[test]
    fn renders_names_marks_and_tag_keys() {
        let t = render(&body(), "127.0.0.1:8127", None, 86_400 * 3 + 3_723);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "meterd top  127.0.0.1:8127  01:02:03 UTC  series this interval: 1203"
        );
        assert!(lines[2].starts_with("NAME") && lines[2].contains("LINES/S"));
        assert!(lines[3].starts_with("api.requests") && lines[3].ends_with("LIMITED, dropped 7"));
        assert!(lines[3].contains(" 1200 ") && lines[3].contains(" 5000 "));
        assert!(lines[4].starts_with("db.latency") && lines[4].ends_with('-'));
        assert!(lines[6].starts_with("TAG KEY"));
        assert!(lines[7].starts_with("user_id") && lines[7].ends_with("1200"));
        assert!(lines[8].starts_with("env") && lines[8].ends_with('2'));
    }

    #[test]
    fn rates_come_from_the_previous_poll() {
        let before = HashMap::from([
            ("api.requests".to_owned(), 4000),
            ("db.latency".to_owned(), 50),
        ]);
        let t = render(&body(), "a:1", Some((2.0, &before)), 0);
        let lines: Vec<&str> = t.lines().collect();
        // 1000 more lines in 2 s; db.latency fell (a flush between polls): no rate.
        assert!(lines[3].contains(" 500 "), "{}", lines[3]);
        assert!(lines[4].ends_with(" -"), "{}", lines[4]);
        assert_eq!(lines_by_name(&body())["db.latency"], 40);
    }

    #[test]
    fn an_empty_interval_says_so() {
        let empty = serde_json::json!({"total_series": 0, "metrics": [], "tag_keys": []});
        let t = render(&empty, "a:1", None, 0);
        assert!(t.contains("series this interval: 0"));
        assert!(t.contains("(no series this interval)"));
        assert!(!t.contains("TAG KEY"));
    }
}
