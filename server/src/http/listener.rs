//! The HTTP listener: accepts connections, caps them per address, bounds how long a client may
//! take, and serves the routes over HTTP/1.1, in plain text or TLS.
//!
//! - **Connections.** At most [`HttpLimits::max_connections_per_address`] at once from one IP
//!   address and [`HttpLimits::max_connections`] in all; a connection over either cap is closed
//!   as soon as it is accepted, before anything is read.
//! - **Time.** A TLS handshake must finish, and each request's headers arrive, within
//!   [`HttpLimits::header_timeout`]. The same bound applies to an idle keep-alive connection
//!   waiting for its next request, so idle connections are closed. A request's body and the
//!   answer to it must be done within [`HttpLimits::request_timeout`], or the client gets
//!   `408 request_timeout` and the connection closes.
//! - **Protocol.** HTTP/1.1 only, on plain and TLS ports alike (TLS offers ALPN `http/1.1`). The
//!   API is a few small request/response calls, so HTTP/2 (and h2c on plain ports) would add
//!   attack surface and nothing else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::ApiError;
use unibus::protocol::codes::ApiCode;

/// How long and how many: the bounds on HTTP clients. A connection over a cap is closed when
/// accepted; a slow handshake, request head or idle connection is closed after
/// `header_timeout`; a slow body or answer gets `408` after `request_timeout`
/// (`docs/operations.md`, "Slow, idle and greedy HTTP clients").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// For a TLS handshake, for a request's headers, and for an idle connection's next request.
    pub header_timeout: Duration,
    /// For reading a request's body and answering it.
    pub request_timeout: Duration,
    /// Connections open at once from one IP address.
    pub max_connections_per_address: usize,
    /// Connections open at once in all.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections_per_address: 64,
            max_connections: 4096,
        }
    }
}

/// How long requests in flight may finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// The largest request head (request line and headers) read, in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Counts open connections per address and in all.
#[derive(Debug)]
struct Connections {
    limits: HttpLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it gives its place back.
struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        // The counts are updated in single statements; a poisoned lock still holds true counts.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.lock();
        let (total, per_address) = &mut *open;
        let mine = per_address.entry(ip).or_insert(0);
        if *total >= self.limits.max_connections || *mine >= self.limits.max_connections_per_address
        {
            if *mine == 0 {
                per_address.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Admitted {
            connections: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        let (total, per_address) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_address.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_address.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each (over TLS with `tls`) until
/// `shutdown` completes; then stops accepting and lets requests in flight finish for up to 5 s.
pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Connections {
        limits,
        open: Mutex::default(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = connections.admit(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "connection refused: too many open");
            continue;
        };
        let limits = connections.limits.clone();
        let (router, tls) = (router.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _admitted = admitted;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, peer, router, &limits, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, &limits, watcher).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer.ip(), error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer.ip(), "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    limits: &HttpLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response =
                match tokio::time::timeout(request_timeout, router.oneshot(request)).await {
                    Ok(response) => response.unwrap_or_else(|never: Infallible| match never {}),
                    Err(_) => timed_out(),
                };
            Ok::<_, Infallible>(response)
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = http.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(peer = %peer.ip(), error = %e, "connection ended with an error");
    }
}

fn timed_out() -> Response {
    let mut response = ApiError::new(
        ApiCode::RequestTimeout,
        "the request took too long to arrive; send it again",
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(per_address: usize, total: usize) -> Arc<Connections> {
        Arc::new(Connections {
            limits: HttpLimits {
                max_connections_per_address: per_address,
                max_connections: total,
                ..HttpLimits::default()
            },
            open: Mutex::default(),
        })
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all_and_places_come_back() {
        let open = connections(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = open.admit(a).unwrap();
        let _second = open.admit(a).unwrap();
        assert!(open.admit(a).is_none(), "a third from one address");
        let _third = open.admit(b).unwrap();
        assert!(open.admit(b).is_none(), "a fourth in all");
        drop(first);
        assert!(open.admit(a).is_some(), "a place came back");
        assert_eq!(open.lock().1.len(), 2);
    }
}
