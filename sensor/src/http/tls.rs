//! The TLS side of a connection: telling a plain-HTTP client it came to
//! the wrong port, and the handshake, both within one deadline.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// First byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

const WRONG_PORT_BODY: &str = "Client sent an HTTP request to an HTTPS server; use https://\n";

/// The clear-text answer to plain HTTP on the TLS port.
fn wrong_port_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{WRONG_PORT_BODY}",
        WRONG_PORT_BODY.len()
    )
}

/// Completes the TLS handshake of `stream` within `timeout`. A client that
/// sends plain HTTP gets a `400` in clear text saying to use https; a
/// silent client, a failed handshake or a timeout close the connection.
/// `None` means the connection is done.
pub async fn accept(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    let deadline = Instant::now() + timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) => {
            wrong_port(stream).await;
            return None;
        }
        Ok(Ok(_)) => return None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection failed before TLS");
            return None;
        }
        Err(_) => {
            tracing::debug!("client sent nothing within the handshake timeout");
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Answers a plain-HTTP request with a clear-text 400 and closes. The
/// request is read (briefly, boundedly) first, so closing does not reset
/// the connection before the client has read the answer.
async fn wrong_port(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
    if stream
        .write_all(wrong_port_answer().as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut buf).await {
            total += n;
            if n == 0 || total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wrong_port_answer_has_the_right_length() {
        let text = super::wrong_port_answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
