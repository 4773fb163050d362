//! Hello, world over `wasi:http`: what users know `wasmtime serve` by. `make bench` drives it with
//! the same load tool as the edge, as the anchor for what a WebAssembly HTTP runtime does here.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("the body's stream");
        out.write_all(b"Hello, world!\n").expect("write the body");
        out.flush().expect("flush the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish the body");
    }
}

wasip2::http::proxy::export!(Hello);
