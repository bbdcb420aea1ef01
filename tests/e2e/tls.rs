//! TLS on both ends, with certificates generated here (rcgen) and real handshakes (a rustls
//! client): the API over HTTPS, client certificates required by `tls_client_ca`, a local
//! forwarding to a global over mutual TLS, statsd over TLS, config errors naming the key,
//! certificates re-read on SIGHUP, and the CLI's API commands over mutual TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::udp_to_http::one_flush;
use crate::support::*;

/// A CA that issues server and client certificates into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA certificate's PEM file.
    ca_path: PathBuf,
}

/// One issued certificate: its PEM files and DER.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_path = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Pki {
            dir,
            ca,
            ca_key,
            ca_path,
        }
    }

    /// A certificate for 127.0.0.1 and localhost, for servers and clients, written as
    /// `name.crt` and `name.key`.
    fn issue(&self, name: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting `ca` only, presenting `identity` when given.
fn client_tls(ca: &Pki, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.der.clone()], id.key_der.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Connects to `addr` over TLS, writes `request`, reads until the server closes; the bytes
/// read, or the error that ended the exchange before any byte arrived.
fn tls_exchange(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(tls, name).map_err(std::io::Error::other)?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(DEADLINE))?;
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    stream.write_all(request)?;
    stream.flush()?;
    let mut response = Vec::new();
    if let Err(e) = stream.read_to_end(&mut response) {
        // A server may close without close_notify after answering; only an error before any
        // answer counts.
        if response.is_empty() {
            return Err(e);
        }
    }
    Ok(response)
}

/// GET `path` over HTTPS; the status (0 when there was no HTTP answer) and body.
fn https_get(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    match tls_exchange(addr, tls, req.as_bytes()) {
        Ok(response) => {
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text
                .strip_prefix("HTTP/1.1 ")
                .and_then(|t| t.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            (status, body)
        }
        Err(_) => (0, String::new()),
    }
}

/// Completes a handshake with `addr`; the connection and its socket, ready for writing.
fn handshake(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<(rustls::ClientConnection, TcpStream)> {
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(tls, name).map_err(std::io::Error::other)?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(DEADLINE))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok((conn, sock))
}

/// The server certificate `addr` presents.
fn peer_certificate(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> CertificateDer<'static> {
    let (conn, _) = handshake(addr, tls).expect("handshake");
    conn.peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("a server certificate")
}

/// Sends `bytes` over TLS and closes the connection cleanly (close_notify, then FIN).
fn tls_send(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, bytes: &[u8]) -> std::io::Result<()> {
    let (mut conn, mut sock) = handshake(addr, tls)?;
    conn.writer().write_all(bytes)?;
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    // Wait for the server to close its side: it has read everything by then.
    let _ = sock.read_to_end(&mut Vec::new());
    Ok(())
}

/// One sample of `/metrics` read over HTTPS.
fn prom_https(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, series: &str) -> Option<f64> {
    let (_, text) = https_get(addr, tls, "/metrics");
    prom_value(&text, series)
}

/// Sends plaintext `request` and returns whatever comes back before the server closes.
fn plaintext_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut resp = Vec::new();
    // A reset after the server's alert is an answer too: nothing more to read.
    let _ = s.read_to_end(&mut resp);
    resp
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn https_config(server: &Issued, client_ca: Option<&Path>, extra_http: &str) -> String {
    let ca = client_ca.map_or(String::new(), |p| {
        format!("tls_client_ca = {:?}", path_str(p))
    });
    format!(
        r#"
hostname = "tls-host"
interval = "1h"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
tls_cert = {:?}
tls_key = {:?}
{ca}
{extra_http}
[[sinks]]
type = "console"
"#,
        path_str(&server.cert),
        path_str(&server.key),
    )
}

#[test]
fn api_over_https_answers_and_plaintext_gets_no_http_answer() {
    let pki = Pki::new("api");
    let server = pki.issue("server");
    let mut m = Meterd::start(&https_config(&server, None, ""));
    let addr = m.addr("http");

    // A client that started a connection and went silent holds up no one.
    let _stalled = TcpStream::connect(addr).unwrap();
    let (status, body) = https_get(addr, client_tls(&pki, None), "/healthz");
    assert_eq!(status, 200, "{body}\n{}", m.log());
    let (status, body) = https_get(addr, client_tls(&pki, None), "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("meterd_lines_received_total"), "{body}");

    // Plain HTTP on the TLS port: the handshake fails, the connection closes, no HTTP answer.
    let resp = plaintext_exchange(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        !resp.starts_with(b"HTTP/"),
        "plaintext got an HTTP answer: {}",
        String::from_utf8_lossy(&resp)
    );
    // A client that does not trust the server's CA refuses it.
    let stranger = Pki::new("stranger");
    assert_eq!(
        https_get(addr, client_tls(&stranger, None), "/healthz").0,
        0
    );

    // Graceful shutdown still works with a stalled handshake in progress.
    let status = m.terminate();
    assert!(status.success(), "{status}\n{}", m.log());
}

#[test]
fn client_certificates_are_required_with_tls_client_ca() {
    let pki = Pki::new("mtls");
    let server = pki.issue("server");
    let client = pki.issue("client");
    let other = Pki::new("other").issue("intruder");
    let m = Meterd::start(&https_config(&server, Some(&pki.ca_path), ""));
    let addr = m.addr("http");

    let (status, _) = https_get(addr, client_tls(&pki, None), "/healthz");
    assert_eq!(status, 0, "no client certificate: refused");
    let (status, _) = https_get(addr, client_tls(&pki, Some(&other)), "/healthz");
    assert_eq!(status, 0, "a certificate from another CA: refused");
    let (status, body) = https_get(addr, client_tls(&pki, Some(&client)), "/healthz");
    assert_eq!(status, 200, "{body}\n{}", m.log());
}

/// Runs `meterd ARGS --api API` plus `tls` (flags and paths) and returns its output.
fn api_cli(args: &[&str], api: &str, tls: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meterd"));
    cmd.args(args).args(["--api", api]);
    for (flag, path) in tls {
        cmd.arg(flag).arg(path);
    }
    cmd.output().unwrap()
}

#[test]
fn cli_commands_reach_an_api_that_requires_client_certificates() {
    let pki = Pki::new("cli");
    let server = pki.issue("server");
    let client = pki.issue("client");
    let m = Meterd::start(&https_config(&server, Some(&pki.ca_path), ""));
    let api = format!("https://{}", m.addr("http"));
    let tls: [(&str, &Path); 3] = [
        ("--tls-ca", &pki.ca_path),
        ("--tls-cert", &client.cert),
        ("--tls-key", &client.key),
    ];
    send_udp(m.addr("udp"), &[b"cli.tls.requests:1|c|#route:home"]);

    // `top` polls the interval the line went into.
    let table = wait_for("the line in meterd top over TLS", || {
        let out = api_cli(&["top", "--once", "--limit", "5"], &api, &tls);
        assert_succeeded(&out);
        let table = String::from_utf8(out.stdout).unwrap();
        table.contains("cli.tls.requests").then_some(table)
    });
    assert!(table.contains(&api), "the header names the API: {table}");
    // A bare HOST:PORT with --tls-* flags means https too.
    let out = api_cli(&["checks"], &m.addr("http").to_string(), &tls);
    assert_succeeded(&out);
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("SERVICE"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tls.capture");
    let out = api_cli(
        &["capture", "--seconds", "1", "--out", file.to_str().unwrap()],
        &api,
        &tls,
    );
    assert_succeeded(&out);
    let (_, trailer) = crate::capture::read_file(&file);
    assert!(trailer.is_some(), "the capture over TLS ended properly");

    // Refused: no client certificate, a server the client does not trust, https flags on http.
    let out = api_cli(&["checks"], &api, &tls[..1]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&api), "the error names the API: {err}");
    let stranger = Pki::new("stranger");
    let out = api_cli(&["checks"], &api, &[("--tls-ca", &stranger.ca_path)]);
    assert!(!out.status.success());
    let plain = format!("http://{}", m.addr("http"));
    let out = api_cli(&["checks"], &plain, &tls);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
    // A key without its certificate is a usage error.
    let out = api_cli(&["checks"], &api, &tls[2..]);
    assert_eq!(out.status.code(), Some(2));
}

fn global_config(sink: &str, server: &Issued, ca: &Path) -> String {
    format!(
        r#"
hostname = "global"
interval = "1h"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
tls_cert = {:?}
tls_key = {:?}
tls_client_ca = {:?}
[[sinks]]
type = "http"
url = "{sink}/global"
"#,
        path_str(&server.cert),
        path_str(&server.key),
        path_str(ca),
    )
}

fn local_config(interval: &str, global: &str, ca: &Path, identity: Option<&Issued>) -> String {
    let identity = identity.map_or(String::new(), |id| {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            path_str(&id.cert),
            path_str(&id.key)
        )
    });
    format!(
        r#"
hostname = "local"
interval = "{interval}"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[forward]
addresses = ["{global}"]
tls_ca = {:?}
{identity}
[[sinks]]
type = "console"
"#,
        path_str(ca),
    )
}

#[test]
fn local_forwards_to_global_over_mutual_tls_exactly() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(30));
    let pki = Pki::new("fleet");
    let (server, client) = (pki.issue("global"), pki.issue("local"));
    let sink = CaptureServer::start(Behaviour::Ok);
    let mut g = Meterd::start(&global_config(&sink.url(), &server, &pki.ca_path));
    let global = format!("https://{}", g.addr("http"));
    let mut l = Meterd::start(&local_config("1h", &global, &pki.ca_path, Some(&client)));

    send_udp(
        l.addr("udp"),
        &[
            b"tls.requests:3|c|#veneurglobalonly",
            b"tls.requests:4|c|#veneurglobalonly",
        ],
    );
    l.wait_lines(2);
    // The local's final flush forwards; the global's final flush emits.
    assert!(l.terminate().success(), "{}", l.log());
    let admin = client_tls(&pki, Some(&client));
    wait_for("the import over mutual TLS", || {
        (prom_https(
            g.addr("http"),
            admin.clone(),
            "meterd_import_received_total",
        )
        .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });
    assert!(g.terminate().success(), "{}", g.log());
    let points = metric_points(&sink);
    let p = only_point(&points, "tls.requests");
    assert_eq!(p["value"], 7.0, "{p}");
    assert_eq!(p["host"], "");
}

#[test]
fn local_without_client_certificate_is_refused_until_reload_gives_it_one() {
    let pki = Pki::new("fleet2");
    let (server, client) = (pki.issue("global"), pki.issue("local"));
    let sink = CaptureServer::start(Behaviour::Ok);
    let g = Meterd::start(&global_config(&sink.url(), &server, &pki.ca_path));
    let global = format!("https://{}", g.addr("http"));
    let l = Meterd::start(&local_config("1s", &global, &pki.ca_path, None));
    let errors = format!("meterd_forward_errors_total{{global=\"{global}\"}}");
    let admin = client_tls(&pki, Some(&client));
    let imports = || {
        prom_https(
            g.addr("http"),
            admin.clone(),
            "meterd_import_received_total",
        )
        .unwrap_or(0.0)
    };

    wait_for("forward errors counted for the refused handshake", || {
        send_udp(l.addr("udp"), &[b"tls.refused:1|c|#veneurglobalonly"]);
        std::thread::sleep(Duration::from_millis(200));
        (l.prom(&errors).unwrap_or(0.0) >= 2.0).then_some(())
    });
    assert_eq!(
        imports(),
        0.0,
        "nothing merged from a local without a certificate"
    );

    // Give the local a certificate (new [forward] keys) and SIGHUP: the rebuilt client presents it.
    let path = l.dir.path().join("meterd.toml");
    std::fs::write(
        &path,
        local_config("1s", &global, &pki.ca_path, Some(&client)),
    )
    .unwrap();
    l.send_signal(libc::SIGHUP);
    wait_for("the local's reload", || {
        l.log().contains("config reloaded").then_some(())
    });
    wait_for("imports delivered after the reload", || {
        send_udp(l.addr("udp"), &[b"tls.refused:1|c|#veneurglobalonly"]);
        std::thread::sleep(Duration::from_millis(200));
        (imports() >= 1.0).then_some(())
    });
}

#[test]
fn statsd_over_tls_lines_arrive() {
    let pki = Pki::new("statsd");
    let server = pki.issue("statsd");
    let client = pki.issue("client");
    let ingest = format!(
        "statsd_tcp_tls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}",
        path_str(&server.cert),
        path_str(&server.key),
        path_str(&pki.ca_path),
    );
    let points = one_flush("", &ingest, |m| {
        let addr = m.addr("tcp_tls");
        // Lines over TLS, the last one without a newline.
        let lines = b"tls.tcp:2|c\ntls.tcp:3|c|#a:b\ntls.gauge:7|g\ntls.tcp:5|c";
        tls_send(addr, client_tls(&pki, Some(&client)), lines).expect("lines sent over TLS");
        // Plaintext to the TLS port and TLS without a client certificate count nothing.
        plaintext_exchange(addr, b"tls.plain:1|c\n");
        let _ = tls_send(addr, client_tls(&pki, None), b"tls.anon:1|c\n");
        m.wait_lines(4);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(m.prom("meterd_lines_received_total"), Some(4.0));
    });
    assert_eq!(sum_named(&points, "tls.tcp"), 10.0);
    assert_eq!(only_point(&points, "tls.gauge")["value"], 7.0);
    assert!(points_named(&points, "tls.plain").is_empty());
    assert!(points_named(&points, "tls.anon").is_empty());
}

#[test]
fn check_config_names_bad_tls_keys() {
    let pki = Pki::new("check");
    let a = pki.issue("a");
    let b = pki.issue("b");
    let check = |text: String| {
        let path = pki.path("check.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check(format!(
        "[http]\ntls_cert = {:?}\ntls_key = \"/nonexistent/meterd.key\"\n",
        path_str(&a.cert)
    ));
    assert!(err.contains("http.tls_key (line 3)"), "{err}");
    assert!(err.contains("/nonexistent/meterd.key"), "{err}");

    let err = check(format!(
        "[http]\ntls_cert = {:?}\ntls_key = {:?}\n",
        path_str(&a.cert),
        path_str(&b.key)
    ));
    assert!(err.contains("http.tls_key (line 3)"), "{err}");
    assert!(err.contains("does not match"), "{err}");

    let garbled = pki.path("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = check(format!("[forward]\ntls_ca = {:?}\n", path_str(&garbled)));
    assert!(err.contains("forward.tls_ca (line 2)"), "{err}");
}

#[test]
fn sighup_serves_the_new_certificate() {
    let pki = Pki::new("rotate");
    let first = pki.issue("server");
    // Both listeners read the same files.
    let mut m = Meterd::start(&https_config(&first, None, "").replace(
        "[ingest]\n",
        &format!(
            "[ingest]\nstatsd_tcp_tls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = {:?}\n",
            path_str(&first.cert),
            path_str(&first.key)
        ),
    ));
    let (api, tcp) = (m.addr("http"), m.addr("tcp_tls"));
    let trust = client_tls(&pki, None);
    assert_eq!(peer_certificate(api, trust.clone()), first.der);
    assert_eq!(peer_certificate(tcp, trust.clone()), first.der);

    // Rotate: new files at the same paths, then SIGHUP.
    let second = pki.issue("server-next");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    m.send_signal(libc::SIGHUP);
    wait_for("the reload", || {
        m.log().contains("config reloaded").then_some(())
    });
    assert_eq!(peer_certificate(api, trust.clone()), second.der);
    assert_eq!(peer_certificate(tcp, trust.clone()), second.der);

    // Bad files: the reload is refused, naming the key, and the listeners keep their certificate.
    std::fs::write(&first.key, "not a key\n").unwrap();
    m.send_signal(libc::SIGHUP);
    wait_for("the refused reload", || {
        m.log().contains("config refused").then_some(())
    });
    assert!(m.log().contains("tls_key"), "{}", m.log());
    assert_eq!(peer_certificate(api, trust.clone()), second.der);
    assert_eq!(peer_certificate(tcp, trust), second.der);
    assert!(m.terminate().success(), "{}", m.log());
}
