//! Serving connections: hyper's own connection handling (which
//! `axum::serve` does not let us configure) with
//!
//! * a header-read timeout: a connection that has not sent a complete
//!   request head within `header_timeout`, including the first bytes and an
//!   idle keep-alive connection waiting for its next request, is closed;
//! * a connection limit: at most `max_connections` connections are served
//!   at once; more wait in the listen backlog until one closes, so the
//!   process never runs out of file descriptors and a flood of slow
//!   connections delays `/healthz` only until they time out;
//! * HTTP/2 keep-alive pings, so dead peers are dropped;
//! * graceful shutdown: on SIGTERM/Ctrl-C no new connections are accepted
//!   and open ones finish their requests (at most `SHUTDOWN_GRACE`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Longest wait for open connections at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The HTTP/2 connection preface; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Time to send a complete request head (and most idle time between
    /// keep-alive requests).
    pub header_timeout: Duration,
    /// HTTP/2: ping interval for idle connections.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(100);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let mut full_logged = false;
    loop {
        if slots.available_permits() == 0 && !full_logged {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached; new connections wait until one closes"
            );
            full_logged = true;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        if slots.available_permits() > 0 {
            full_logged = false;
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors or similar: do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // The protocol is sniffed from the first bytes before hyper's
            // own timeout applies: bound that wait too.
            if !first_bytes(&stream, limits.header_timeout).await {
                return;
            }
            let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                // Each request runs in its own task, to its end, even when
                // the caller goes away: a store transaction is never cut in
                // half (sqlx leaves a connection inside its transaction when
                // the future is dropped during BEGIN, and every later
                // request on that connection fails), and what a request
                // decided is committed and audited whether or not anyone
                // reads the answer.
                let handled = tokio::spawn(router.oneshot(req.map(axum::body::Body::new)));
                async move {
                    Ok::<_, Infallible>(match handled.await {
                        Ok(res) => res.unwrap_or_else(|e| match e {}),
                        // Panics are caught inside the router; this is the
                        // runtime shutting down.
                        Err(_) => crate::oauth::errors::OAuthError::unavailable().into_response(),
                    })
                }
            });
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within the shutdown grace period");
    }
}

/// Waits until the connection has sent enough to tell HTTP/1 from HTTP/2,
/// at most `limit`. False: nothing came in time, or the peer closed.
async fn first_bytes(stream: &TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 24];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => {
                if n >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&buf[..n]) {
                    return true;
                }
                // Part of the HTTP/2 preface: wait for the rest.
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20)))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
        }
    }
}
