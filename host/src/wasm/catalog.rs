//! `catalog`: the sale's SKUs and hold TTL, from the edge's in-memory copy.

use super::HostState;
use crate::bindings::SkuInfo;
use crate::bindings::flashsale::cart::catalog::Host;

impl Host for HostState {
    fn sku(&mut self, sku: String) -> wasmtime::Result<Option<SkuInfo>> {
        Ok(self.catalog.sku(&sku).map(|s| SkuInfo {
            sku: s.sku.clone(),
            name: s.name.clone(),
            price_cents: s.price_cents,
            limit_per_customer: s.limit_per_customer,
            sale_starts_at: s.sale_starts_at,
        }))
    }

    fn hold_ttl(&mut self) -> wasmtime::Result<i64> {
        Ok(self.catalog.hold_ttl_ms)
    }
}
