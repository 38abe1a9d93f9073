//! What the fake servers ([`crate::qflow`], [`crate::gce_metadata`]) share: a TCP listener on
//! `127.0.0.1` served from a thread of its own with its own tokio runtime, so that synchronous
//! `#[test]`s can use the server, and a stop that drops every open connection (hanging requests
//! included), as a server that goes away does.
//!
//! Also an HTTP/1.1 accept loop ([`serve_http`]), used by the fake metadata server and the fake
//! Compute API.
//!
//! Not here: routing and answers (each fake's own).

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

/// A server running on its own thread; stopped on drop.
pub struct Background {
    addr: SocketAddr,
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Bind `addr` (port 0: a free one) and run `serve(listener, stop)` until it returns; it
    /// should return once `stop` fires. `name` names the thread and the messages.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the runtime or thread cannot be made.
    pub fn start<F, Fut>(
        addr: SocketAddr,
        name: &'static str,
        serve: F,
    ) -> anyhow::Result<Background>
    where
        F: FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        // std sets SO_REUSEADDR on Unix: re-binding a port right after a stop works.
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("{name}: cannot listen on {addr}"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("{name}: cannot make the listener non-blocking"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("{name}: cannot read the listener address"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("{name}: cannot build the runtime"))?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, stopped).await,
                        Err(e) => eprintln!("{name}: cannot use the listener: {e}"),
                    }
                });
                // Hanging requests never end by themselves: drop them.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .with_context(|| format!("{name}: cannot spawn the server thread"))?;
        Ok(Background {
            addr,
            name,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and drop open connections. Also done on drop; calling it twice is fine.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the server already stopped.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("{}: the server thread panicked", self.name);
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serve HTTP/1.1 on `listener` until `stopped` fires: every request goes to
/// `handle(request, state)`, each connection on a task of its own.
pub async fn serve_http<S, F, Fut>(
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<S>,
    mut stopped: oneshot::Receiver<()>,
    handle: F,
) where
    S: Send + Sync + 'static,
    F: Fn(hyper::Request<hyper::body::Incoming>, std::sync::Arc<S>) -> Fut
        + Copy
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = hyper::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let state = std::sync::Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = handle(req, std::sync::Arc::clone(&state));
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The whole body of `req` (empty when it cannot be read: the client went away).
pub async fn body(req: hyper::Request<hyper::body::Incoming>) -> bytes::Bytes {
    use http_body_util::BodyExt as _;
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}
