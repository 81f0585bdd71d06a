//! The metrics endpoint with `--web.config.file`: TLS (and client
//! certificates) and basic auth, checked with curl and with a real
//! Prometheus scraping over TLS, plus stalled and garbage clients that must
//! not stall a scrape. Runs `sensor::http::serve_with` directly on
//! 127.0.0.1 (no root needed); certificates come from the openssl CLI.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use sensor::http::{serve_with, Health, HttpConfig, WebConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static SEQ: AtomicU32 = AtomicU32::new(0);
const PASSWORD: &str = "s3cret pass";

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("st-tls-{}-{n}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by the CA: `ca.crt`, `server.{crt,key}`, `client.{crt,key}`.
fn make_pki(dir: &TempDir) {
    let p = |n: &str| dir.path(n);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-days", "2", "-subj", "/CN=sensor test CA", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "prometheus", "extendedKeyUsage=clientAuth\n"),
    ] {
        let extfile = dir.write(
            &format!("{name}.ext"),
            &format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"),
        );
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", &format!("/CN={cn}"), "-keyout"])
            .arg(p(&format!("{name}.key")))
            .arg("-out")
            .arg(p(&format!("{name}.csr"))));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(p(&format!("{name}.csr")))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(&extfile)
            .arg("-out")
            .arg(p(&format!("{name}.crt"))));
    }
}

/// A web config with TLS (client certificates per `client_auth`) and the
/// user `prom` with [`PASSWORD`].
fn web_config(dir: &TempDir, client_auth: Option<&str>) -> PathBuf {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let mut text =
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n".to_string();
    if let Some(mode) = client_auth {
        text += &format!("  client_auth_type: {mode}\n  client_ca_file: ca.crt\n");
    }
    text += &format!("basic_auth_users:\n  prom: '{hash}'\n");
    dir.write("web.yml", &text)
}

struct Server {
    addr: SocketAddr,
    registry: Registry,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(web: &Path, config: HttpConfig) -> Server {
    let web = WebConfig::load(web).unwrap();
    assert!(web.tls_enabled() && web.auth_enabled());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with(
        listener,
        registry.clone(),
        Arc::new(Health::new()),
        config,
        web,
        async {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        registry,
        _stop: tx,
    }
}

/// curl's exit code, the HTTP status (0 if none) and headers plus body.
struct Curl {
    exit: i32,
    status: u16,
    text: String,
}

async fn curl(args: Vec<String>) -> Curl {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .expect("curl is installed");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (text, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Curl {
            exit: out.status.code().unwrap_or(-1),
            status: code.trim().parse().unwrap_or(0),
            text: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        }
    })
    .await
    .unwrap()
}

fn args(dir: &TempDir, extra: &[&str], url: String) -> Vec<String> {
    let mut a = vec![
        "--cacert".to_string(),
        dir.path("ca.crt").display().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(url);
    a
}

fn fast() -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_secs(2),
        connection_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_metrics_over_tls_only_with_the_password() {
    let dir = TempDir::new("curl");
    make_pki(&dir);
    let srv = start(&web_config(&dir, None), fast()).await;
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", srv.addr.port());
    let user = format!("prom:{PASSWORD}");

    let ok = curl(args(&dir, &["-u", &user], url("/metrics"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        ok.text
            .contains("# TYPE sensor_http_requests_total counter"),
        "{}",
        ok.text
    );

    for (extra, what) in [
        (vec!["-u", "prom:wrong"], "wrong password"),
        (vec!["-u", "nobody:wrong"], "unknown user"),
        (vec![], "no credentials"),
    ] {
        let r = curl(args(&dir, &extra, url("/metrics"))).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        let lower = r.text.to_ascii_lowercase();
        assert!(
            lower.contains("www-authenticate: basic realm=\"sensor\""),
            "{what}: {}",
            r.text
        );
        assert!(!r.text.contains("# TYPE"), "{what}: metrics leaked");
    }
    // Health endpoints need the credentials too (see docs/operations-http.md).
    assert_eq!(curl(args(&dir, &[], url("/-/healthy"))).await.status, 401);
    assert_eq!(
        curl(args(&dir, &["-u", &user], url("/-/healthy")))
            .await
            .status,
        200
    );

    // Without the CA the server's certificate is not trusted (exit 60).
    let untrusted = curl(vec!["-u".into(), user.clone(), url("/metrics")]).await;
    assert_eq!(
        (untrusted.exit, untrusted.status),
        (60, 0),
        "{}",
        untrusted.text
    );

    // Plain HTTP to the TLS port: a clear-text 400 that says what to do.
    let plain = curl(vec![format!(
        "http://127.0.0.1:{}/metrics",
        srv.addr.port()
    )])
    .await;
    assert_eq!(plain.status, 400, "{}", plain.text);
    assert!(plain.text.contains("use https://"), "{}", plain.text);

    let text = sensor::metrics::render(&srv.registry);
    for line in [
        "sensor_http_requests_total{code=\"401\"} 4",
        "sensor_http_requests_total{code=\"200\"} 2",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_configured() {
    let dir = TempDir::new("mtls");
    make_pki(&dir);
    let srv = start(
        &web_config(&dir, Some("RequireAndVerifyClientCert")),
        fast(),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/metrics", srv.addr.port());
    let user = format!("prom:{PASSWORD}");
    let (cert, key) = (dir.path("client.crt"), dir.path("client.key"));
    let with_cert = [
        "-u",
        &user,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let r = curl(args(&dir, &with_cert, url.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = curl(args(&dir, &["-u", &user], url.clone())).await;
    assert_eq!(
        r.status, 0,
        "served without a client certificate: {}",
        r.text
    );
    assert_ne!(r.exit, 0);
    // A certificate the CA did not sign (the server's own key pair is not
    // a client certificate either) is refused too.
    let (scert, skey) = (dir.path("server.crt"), dir.path("server.key"));
    let wrong = [
        "-u",
        &user,
        "--cert",
        scert.to_str().unwrap(),
        "--key",
        skey.to_str().unwrap(),
    ];
    assert_eq!(curl(args(&dir, &wrong, url)).await.status, 0);
}

#[test]
fn bad_certificates_fail_at_load_naming_the_key() {
    let dir = TempDir::new("bad");
    make_pki(&dir);
    let hash = bcrypt::hash("x", 4).unwrap();
    for (cert, key, named) in [
        ("server.crt", "client.key", "tls_server_config.key_file"),
        ("server.key", "server.key", "tls_server_config.cert_file"),
        ("server.crt", "server.crt", "tls_server_config.key_file"),
        ("missing.crt", "server.key", "tls_server_config.cert_file"),
    ] {
        let text = format!(
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  a: '{hash}'\n"
        );
        let err = WebConfig::load(&dir.write("web.yml", &text))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(named),
            "{cert}/{key}: {named} not named in: {err}"
        );
    }
}

/// Reads `url` with a blocking HTTP/1.0 request; the body if 200.
fn get(url_host: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(url_host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {url_host}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth() {
    let prometheus = Path::new("/usr/bin/prometheus");
    if !prometheus.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/usr/bin/prometheus is required in CI: install Debian's prometheus package"
        );
        eprintln!("skipping: /usr/bin/prometheus not installed");
        return;
    }
    let dir = TempDir::new("prom");
    make_pki(&dir);
    let srv = start(
        &web_config(&dir, Some("RequireAndVerifyClientCert")),
        fast(),
    )
    .await;
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n      \
             cert_file: {cert}\n      key_file: {key}\n    basic_auth:\n      username: prom\n      \
             password: '{password}'\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca = dir.path("ca.crt").display(),
            cert = dir.path("client.crt").display(),
            key = dir.path("client.key").display(),
            port = srv.addr.port(),
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
        job("sensor", PASSWORD),
        job("sensor_wrong_password", "nope"),
    );
    let config_path = dir.write("prometheus.yml", &config);
    let web_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{web_port}");
    let log = std::fs::File::create(dir.path("prometheus.log")).unwrap();
    let _prom = Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // Poll the targets API until both jobs have been scraped.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (up, down) = loop {
        let l = listen.clone();
        let body = tokio::task::spawn_blocking(move || get(&l, "/api/v1/targets"))
            .await
            .unwrap();
        if let Some(targets) = body
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["data"]["activeTargets"].as_array().cloned())
        {
            let of = |job: &str| {
                targets
                    .iter()
                    .find(|t| t["labels"]["job"] == job)
                    .filter(|t| t["health"] != "unknown")
                    .cloned()
            };
            if let (Some(up), Some(down)) = (of("sensor"), of("sensor_wrong_password")) {
                if up["health"] == "up" {
                    break (up, down);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the sensor within 60 s; log:\n{}",
            std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        up["scrapeUrl"],
        format!("https://127.0.0.1:{}/metrics", srv.addr.port())
    );
    assert_eq!(up["lastError"], "", "{up}");
    assert_eq!(down["health"], "down", "{down}");
    let err = down["lastError"].as_str().unwrap_or_default();
    assert!(
        err.contains("401"),
        "wrong password not refused with 401: {down}"
    );
    let text = sensor::metrics::render(&srv.registry);
    assert!(
        !text.contains("sensor_http_requests_total{code=\"200\"} 0\n"),
        "{text}"
    );
    assert!(
        !text.contains("sensor_http_requests_total{code=\"401\"} 0\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_garbage_clients_do_not_stall_a_scrape() {
    let dir = TempDir::new("stall");
    make_pki(&dir);
    let header_timeout = Duration::from_secs(5);
    let srv = start(
        &web_config(&dir, None),
        HttpConfig {
            header_read_timeout: header_timeout,
            ..fast()
        },
    )
    .await;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        // Half of them start a TLS record and then go silent.
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        stalled.push(s);
    }
    let mut garbage = Vec::new();
    for junk in [
        &b"\x16\x03\x01\x00\x05hello garbage"[..],
        b"\x00\xff\xfe junk\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        garbage.push(s);
    }

    let t0 = Instant::now();
    let r = curl(args(
        &dir,
        &["-u", &format!("prom:{PASSWORD}")],
        format!("https://127.0.0.1:{}/metrics", srv.addr.port()),
    ))
    .await;
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        took < Duration::from_millis(1500),
        "scrape took {took:?} with 10 stalled and 3 garbage connections open"
    );
    assert!(
        opened.elapsed() < header_timeout,
        "the stalled clients were still within their timeout"
    );
    eprintln!("scrape with 10 stalled and 3 garbage connections: {took:?}");

    // Garbage is answered or dropped at once; the stalled ones are closed
    // by the server after the handshake timeout, not kept forever.
    for mut s in garbage.into_iter().chain(stalled) {
        let mut buf = Vec::new();
        tokio::time::timeout(
            header_timeout + Duration::from_secs(3),
            s.read_to_end(&mut buf),
        )
        .await
        .expect("the server closes every stalled or garbage connection")
        .ok();
    }
    assert!(opened.elapsed() >= header_timeout - Duration::from_millis(100));
}
