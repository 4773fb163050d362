//! A plain hyper hello world (`cart-bench hello`): the ceiling of an HTTP server on this
//! machine, the second anchor beside `wasmtime serve`'s hello-world component. It answers what
//! that component answers, to any request.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves `Hello, world!` on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let hello = hyper::service::service_fn(|_request| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    b"Hello, world!\n",
                ))))
            });
            // A client hanging up mid-request is its own business.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hello)
                .await;
        });
    }
}
