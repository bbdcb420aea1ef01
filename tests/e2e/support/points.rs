//! Reading what the `http` sink delivered to a [`CaptureServer`]: its documents, its metric
//! points, and sums and lookups over them by name and tag.

use serde_json::Value;

use super::capture::{CaptureServer, Captured};

/// All metric points of every `http`-sink JSON document received, flattened.
pub fn metric_points(server: &CaptureServer) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(|r| r.json()["metrics"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Points named `name` (from every flush).
pub fn points_named(points: &[Value], name: &str) -> Vec<Value> {
    points
        .iter()
        .filter(|p| p["name"] == name)
        .cloned()
        .collect()
}

/// Sum of the values of every point named `name`.
pub fn sum_named(points: &[Value], name: &str) -> f64 {
    points_named(points, name)
        .iter()
        .map(|p| p["value"].as_f64().unwrap_or(0.0))
        .sum()
}

/// Sum of the values of every point named `name` that carries the tag `tag`.
pub fn sum_tagged(points: &[Value], name: &str, tag: &str) -> f64 {
    points_named(points, name)
        .iter()
        .filter(|p| {
            p["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tag))
        })
        .map(|p| p["value"].as_f64().unwrap_or(0.0))
        .sum()
}

/// The JSON documents of every POST the capture server received, in arrival order.
pub fn documents(server: &CaptureServer) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(Captured::json)
        .collect()
}

/// The one point named `name`; fails unless there is exactly one.
pub fn only_point(points: &[Value], name: &str) -> Value {
    let found = points_named(points, name);
    assert_eq!(found.len(), 1, "one point named {name}: {found:?}");
    found[0].clone()
}
