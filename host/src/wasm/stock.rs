//! `stock`: this edge's escrowed units, in the request's transaction. A shortage is a value;
//! releasing or selling units that are not held is a guest bug and traps.

use super::HostState;
use crate::bindings::Shortage;
use crate::bindings::flashsale::cart::stock::Host;
use crate::edge_db;

impl Host for HostState {
    fn reserve(&mut self, sku: String, quantity: u32) -> wasmtime::Result<Result<(), Shortage>> {
        Ok(edge_db::reserve(&self.conn, &sku, quantity)?
            .map_err(|available| Shortage { available }))
    }

    fn release(&mut self, sku: String, quantity: u32) -> wasmtime::Result<()> {
        Ok(edge_db::release(&self.conn, &sku, quantity)?)
    }

    fn sell(&mut self, sku: String, quantity: u32) -> wasmtime::Result<()> {
        Ok(edge_db::sell(&self.conn, &sku, quantity)?)
    }

    fn free(&mut self, sku: String) -> wasmtime::Result<u32> {
        Ok(edge_db::free(&self.conn, &sku)?)
    }
}
