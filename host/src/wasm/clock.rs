//! `clock`: the request's one `now`.

use super::HostState;
use crate::bindings::flashsale::cart::clock::Host;

impl Host for HostState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.now)
    }
}
