//! The sockets: binds each configured address (a `::` listener takes IPv4 too), accepts TCP
//! connections, does the TLS handshake where the listener asks for it, and serves HTTP/1.1 and
//! HTTP/2 (by ALPN on TLS) with limits against slow or greedy clients.
//!
//! TLS is tokio-rustls; HTTP is hyper-util's, with the version pinned from ALPN on TLS and, on
//! plain sockets, hyper's sniffing bounded by `client_header_timeout` (`first_bytes_arrive`).
//! Request bodies are wrapped in tower-http's `TimeoutBody` (`client_body_timeout`) and
//! `deadline.rs`'s `DeadlineBody` (`client_body_deadline`), both answered `408`. At stop,
//! connections are drained gracefully. rustls uses ring only (no aws-lc-rs in the tree).

pub mod certificates;
pub mod deadline;
pub mod limits;
pub mod tls;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a plain-HTTP client must send first to speak HTTP/2 (prior knowledge, RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Request headers larger than this (or more of them) are refused.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// HTTP/2 connections are pinged when idle; one that does not answer is closed.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(60);
/// Concurrent requests on one HTTP/2 connection.
const HTTP2_MAX_STREAMS: u32 = 256;

/// Binds `address`; an IPv6 wildcard also accepts IPv4 (whatever the system's `bindv6only`).
pub fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if address.is_ipv6() {
        let socket = TcpSocket::new_v6()?;
        if address.ip().is_unspecified() {
            dual_stack(&socket)?;
        }
        socket
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket
        .bind(address)
        .with_context(|| format!("cannot listen on {address}"))?;
    Ok(socket.listen(1024)?)
}

fn dual_stack(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let off: libc::c_int = 0;
    // SAFETY: a valid socket descriptor and a c_int option of the right size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&raw const off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Limits on slow clients (`client_header_timeout`, `client_body_timeout`,
/// `client_body_deadline`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub body: Duration,
    pub body_deadline: Duration,
}

impl Timeouts {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            header: config.client_header_timeout.0,
            body: config.client_body_timeout.0,
            body_deadline: config.client_body_deadline.0,
        }
    }
}

/// Who may open a connection to one listener: the process-wide caps, and the peers exempt from
/// the per-address cap (an `x_forwarded` listener's trusted proxies).
#[derive(Clone)]
pub struct Admission {
    pub limits: Arc<limits::ConnectionLimits>,
    pub trusted_proxies: Option<crate::web::client_ip::TrustForwardedFor>,
}

/// The HTTP/1.1 and HTTP/2 connection settings; `version` pins one (known from ALPN) so no
/// bytes are sniffed.
fn http_builder(timeouts: Timeouts, version: Option<&[u8]>) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .keep_alive_interval(HTTP2_KEEPALIVE)
        .keep_alive_timeout(Duration::from_secs(20));
    match version {
        Some(b"h2") => builder.http2_only(),
        Some(_) => builder.http1_only(),
        None => builder,
    }
}

/// Waits (up to `limit`) until a plain-HTTP client has sent enough to tell HTTP/1.1 from HTTP/2:
/// hyper's own sniffing has no timeout, so a client that sends nothing, or a few bytes of the
/// HTTP/2 preface, would hold the connection for ever. `false`: closed or too slow.
async fn first_bytes_arrive(stream: &TcpStream, limit: Duration) -> bool {
    let sniff = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(false);
            }
            if n == buf.len() || buf.get(..n) != H2_PREFACE.get(..n) {
                return Ok(true);
            }
            // Part of the preface: peek again once more may have come.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    matches!(tokio::time::timeout(limit, sniff).await, Ok(Ok(true)))
}

/// Accepts connections on `listener` until `stop` turns true, then lets open connections finish
/// their requests (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    timeouts: Timeouts,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let sniffing = Arc::new(http_builder(timeouts, None));
    let http1 = Arc::new(http_builder(timeouts, Some(b"http/1.1")));
    let http2 = Arc::new(http_builder(timeouts, Some(b"h2")));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exempt = admission
            .trusted_proxies
            .as_ref()
            .is_some_and(|proxies| proxies.trusts(peer.ip()));
        // Dropping the stream closes it; the slot counts the connection out when it ends.
        let Ok(slot) = admission.limits.admit(peer.ip(), exempt) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = per_connection_service(router.clone(), peer, timeouts);
        let (sniffing, http1, http2) = (sniffing.clone(), http1.clone(), http2.clone());
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result =
                match acceptor {
                    None => {
                        if !first_bytes_arrive(&stream, timeouts.header).await {
                            return;
                        }
                        let connection = sniffing
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                        // A TLS-ALPN-01 validation only looks at the certificate (RFC 8737 §3).
                        let builder = match stream.get_ref().1.alpn_protocol() {
                            Some(tls::ACME_TLS_ALPN) => return,
                            Some(b"h2") => http2,
                            _ => http1,
                        };
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
}

/// The router with the peer address put where axum's `ConnectInfo` extractor looks for it, and
/// the request body cut off when the client pauses longer than `client_body_timeout` or takes
/// longer than `client_body_deadline` in all (which upload handlers may extend through the
/// [`deadline::BodyDeadline`] extension).
fn per_connection_service(
    router: Router,
    peer: SocketAddr,
    timeouts: Timeouts,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let (parts, body) = request.into_parts();
        let (body, deadline) = deadline::DeadlineBody::new(body, timeouts.body_deadline);
        let body = axum::body::Body::new(TimeoutBody::new(timeouts.body, body));
        let mut request = http::Request::from_parts(parts, body);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(deadline);
        router.clone().oneshot(request)
    })
}
