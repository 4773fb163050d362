//! `outbox`: events appended in the request's transaction, as the JSON central applies.

use super::HostState;
use crate::bindings::Event;
use crate::bindings::flashsale::cart::outbox::Host;
use crate::{edge_db, events};

impl Host for HostState {
    fn emit(&mut self, e: Event) -> wasmtime::Result<()> {
        let json = serde_json::to_string(&events::OutboxEvent::from(e))?;
        Ok(edge_db::append_outbox(&self.conn, self.now, &json)?)
    }
}
