use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;

struct Server {
    addr: std::net::SocketAddr,
    health: Arc<Health>,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), HttpError>>,
}

async fn start(config: HttpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let health = Arc::new(Health::new());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(
        listener,
        registry.clone(),
        Arc::clone(&health),
        config,
        WebConfig::default(),
        async {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        health,
        registry,
        stop: Some(tx),
        task,
    }
}

/// Sends one request with `Connection: close`; returns status and the raw
/// response.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf))
        .await
        .expect("response within 5 s")
        .unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {buf:?}"));
    (code, buf)
}

fn fast() -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        connection_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

#[tokio::test]
async fn routes_answer_with_the_documented_codes() {
    let srv = start(fast()).await;
    let (code, body) = request(srv.addr, "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(body.contains("# TYPE sensor_scrape_duration_seconds histogram"));
    assert_eq!(request(srv.addr, "GET", "/-/healthy").await.0, 200);
    assert_eq!(request(srv.addr, "GET", "/-/ready").await.0, 503);
    srv.health.set_ready(true);
    assert_eq!(request(srv.addr, "GET", "/-/ready").await.0, 200);
    assert_eq!(request(srv.addr, "GET", "/nope").await.0, 404);
    let (code, body) = request(srv.addr, "POST", "/metrics").await;
    assert_eq!(code, 405);
    assert!(
        body.to_ascii_lowercase().contains("allow: get, head"),
        "{body}"
    );
    let (code, body) = request(srv.addr, "HEAD", "/metrics").await;
    assert_eq!(code, 200);
    assert!(!body.contains("# TYPE"), "HEAD has no body");

    let text = crate::metrics::render(&srv.registry);
    for (code, n) in [("200", 4), ("404", 1), ("405", 1), ("503", 1)] {
        let line = format!("sensor_http_requests_total{{code=\"{code}\"}} {n}");
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(text.contains("sensor_scrape_duration_seconds_count 2"));
}

#[tokio::test]
async fn scrapes_beyond_the_cap_get_503_at_once() {
    let srv = start(HttpConfig {
        max_concurrent_scrapes: 0,
        ..fast()
    })
    .await;
    let t0 = Instant::now();
    let (code, body) = request(srv.addr, "GET", "/metrics").await;
    assert_eq!(code, 503, "{body}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    // Health checks are not scrapes and still answer.
    assert_eq!(request(srv.addr, "GET", "/-/healthy").await.0, 200);
}

#[tokio::test]
async fn a_slow_client_neither_stalls_scrapes_nor_stays_forever() {
    let srv = start(HttpConfig {
        header_read_timeout: Duration::from_secs(2),
        ..fast()
    })
    .await;
    // Half a request line, then silence.
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    slow.write_all(b"GET /metr").await.unwrap();
    // Garbage on another connection.
    let mut junk = TcpStream::connect(srv.addr).await.unwrap();
    junk.write_all(b"\x00\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();

    let t0 = Instant::now();
    assert_eq!(request(srv.addr, "GET", "/metrics").await.0, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "scrape was stalled");

    // The slow client is cut off by the header read timeout.
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
        .await
        .expect("slow connection closed by the server");
    assert!(n.is_ok());
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut buf))
        .await
        .expect("malformed connection closed by the server")
        .unwrap();
    let reply = String::from_utf8_lossy(&buf);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed() {
    let srv = start(HttpConfig {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(10),
        ..fast()
    })
    .await;
    let mut held = TcpStream::connect(srv.addr).await.unwrap();
    held.write_all(b"GET /-/hea").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .expect("excess connection closed at once");
    assert!(buf.is_empty(), "excess connection was served");
    drop(held);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let mut srv = start(fast()).await;
    assert_eq!(request(srv.addr, "GET", "/-/healthy").await.0, 200);
    srv.stop.take().unwrap().send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(3), &mut srv.task)
        .await
        .expect("serve returned after shutdown")
        .unwrap();
    assert!(res.is_ok());
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn a_registry_is_served_once() {
    let registry = Registry::new();
    HttpMetrics::register(&registry).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let res = serve(
        listener,
        registry,
        Arc::new(Health::new()),
        WebConfig::default(),
        async {},
    )
    .await;
    assert!(matches!(res, Err(HttpError::Metrics { .. })));
}
