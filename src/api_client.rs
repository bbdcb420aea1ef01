//! What the command-line clients of meterd's HTTP API share (`meterd checks`, `meterd top`): a
//! GET that answers JSON or an error naming the address, and an aligned text table.

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Longest a request may take before the client gives up.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client of the API at one `HOST:PORT`, with its own single-threaded runtime (the CLI has no
/// other).
pub struct ApiClient {
    api: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of `api` (`HOST:PORT`); nothing is sent yet.
    pub fn new(api: &str) -> Result<ApiClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        Ok(ApiClient {
            api: api.to_owned(),
            runtime,
            http: reqwest::Client::new(),
        })
    }

    /// The runtime the requests run on (for a caller that also waits on signals or timers).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// `GET path?params`, blocking; the JSON answer, or an error naming the address (unreachable)
    /// or the API's own `error` (any status but 2xx).
    pub fn get_json(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.runtime.block_on(self.get_json_async(path, params))
    }

    /// [`ApiClient::get_json`] for a caller already inside [`ApiClient::runtime`].
    pub async fn get_json_async(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let api = &self.api;
        let url = format!("http://{api}{path}");
        let resp = self
            .http
            .get(&url)
            .query(params)
            .timeout(TIMEOUT)
            .send()
            .await
            .with_context(|| format!("cannot reach meterd's API at {api}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?;
        let body: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{url} did not answer JSON"))?;
        if !status.is_success() {
            bail!("{url}: {status}: {}", body["error"].as_str().unwrap_or("?"));
        }
        Ok(body)
    }
}

/// Which side of its column a cell keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// `rows` under `header`, each column as wide as its widest cell, two spaces apart, trailing
/// spaces trimmed; one line per row.
pub fn render_table<const N: usize>(
    header: [&str; N],
    align: [Align; N],
    rows: &[[String; N]],
) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths.iter().zip(align.iter()))
            .map(|(c, (w, a))| match a {
                Align::Left => format!("{c:<w$}"),
                Align::Right => format!("{c:>w$}"),
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for r in rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_left_and_right() {
        let t = render_table(
            ["NAME", "N"],
            [Align::Left, Align::Right],
            &[["a".into(), "1000".into()], ["longer".into(), "2".into()]],
        );
        assert_eq!(t, "NAME       N\na       1000\nlonger     2\n");
    }

    #[test]
    fn an_unreachable_api_is_named() {
        // A port just freed: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let err = ApiClient::new(&addr)
            .unwrap()
            .get_json("/healthz", &[])
            .unwrap_err();
        assert!(format!("{err:#}").contains(&addr), "{err:#}");
    }
}
