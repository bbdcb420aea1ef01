//! What the command-line clients of meterd's HTTP API share (`meterd checks`, `meterd top`,
//! `meterd capture`): where the API is and how to reach it (plain HTTP or HTTPS, with a client
//! certificate when the API requires one), a GET that answers JSON or an error naming the
//! address, and an aligned text table.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Longest a request may take before the client gives up.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How to reach an API served over HTTPS (`[http] tls_cert`): the `--tls-*` flags. Any of them
/// makes a bare `HOST:PORT` mean `https://`.
#[derive(Debug, Clone, Default)]
pub struct ApiTls {
    /// CA certificates (PEM) trusted beside the bundled public roots.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for an API with `[http] tls_client_ca`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ApiTls {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }
}

/// The base URL (`scheme://HOST:PORT`) of `api`: `HOST:PORT` (http, or https when `tls` sets
/// anything), `http://HOST:PORT` or `https://HOST:PORT`; a trailing `/` is allowed.
pub fn base_url(api: &str, tls: &ApiTls) -> Result<String> {
    let (scheme, authority) = match api.split_once("://") {
        None if tls.is_set() => ("https", api),
        None => ("http", api),
        Some(("https", rest)) => ("https", rest),
        Some(("http", _)) if tls.is_set() => {
            bail!("--api {api}: the --tls-* flags need an https:// API")
        }
        Some(("http", rest)) => ("http", rest),
        Some((other, _)) => bail!("--api {api}: {other}:// is neither http:// nor https://"),
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        bail!("--api {api}: expected HOST:PORT, http://HOST:PORT or https://HOST:PORT");
    }
    Ok(format!("{scheme}://{authority}"))
}

/// A client of the API at one address, with its own single-threaded runtime (the CLI has no
/// other).
pub struct ApiClient {
    /// `scheme://HOST:PORT`.
    base: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of `api` (see [`base_url`]), trusting and presenting what `tls` names; nothing
    /// is sent yet. Fails on a malformed address or an unreadable certificate or key.
    pub fn new(api: &str, tls: &ApiTls) -> Result<ApiClient> {
        let base = base_url(api, tls)?;
        let mut builder =
            reqwest::Client::builder().user_agent(concat!("meterd/", env!("CARGO_PKG_VERSION")));
        if tls.is_set() {
            let identity = tls
                .identity
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            let config = crate::tls::client_config(tls.ca.as_deref(), identity)?;
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        Ok(ApiClient {
            base,
            runtime,
            http,
        })
    }

    /// The API's base URL (`scheme://HOST:PORT`), as messages name it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` on the API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path?query` within `timeout`: the answer of any status, or an error naming the API
    /// when it cannot be reached (for a caller reading the answer its own way).
    pub async fn get(
        &self,
        path: &str,
        query: &(impl serde::Serialize + ?Sized),
        timeout: std::time::Duration,
    ) -> Result<reqwest::Response> {
        self.http
            .get(self.url(path))
            .query(query)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("cannot reach meterd's API at {}", self.base))
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
        let url = self.url(path);
        let resp = self.get(path, params, TIMEOUT).await?;
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
        let err = ApiClient::new(&addr, &ApiTls::default())
            .unwrap()
            .get_json("/healthz", &[])
            .unwrap_err();
        assert!(format!("{err:#}").contains(&addr), "{err:#}");
    }

    #[test]
    fn api_addresses_take_a_scheme_or_imply_one() {
        let none = ApiTls::default();
        let ca = ApiTls {
            ca: Some("ca.pem".into()),
            identity: None,
        };
        let url = |api: &str, tls: &ApiTls| base_url(api, tls).map_err(|e| e.to_string());
        assert_eq!(
            url("127.0.0.1:8127", &none).unwrap(),
            "http://127.0.0.1:8127"
        );
        assert_eq!(
            url("127.0.0.1:8127", &ca).unwrap(),
            "https://127.0.0.1:8127"
        );
        assert_eq!(url("https://h:1/", &none).unwrap(), "https://h:1");
        assert_eq!(url("http://h:1", &none).unwrap(), "http://h:1");
        assert!(url("http://h:1", &ca).unwrap_err().contains("https://"));
        assert!(url("ftp://h:1", &none).unwrap_err().contains("ftp://"));
        for bad in ["", "https://", "h:1/api", "u@h:1"] {
            assert!(url(bad, &none).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unreadable_ca_is_named() {
        let tls = ApiTls {
            ca: Some("/nonexistent/ca.pem".into()),
            identity: None,
        };
        let err = ApiClient::new("127.0.0.1:1", &tls).err().unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
    }
}
