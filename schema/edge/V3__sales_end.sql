-- An ended sale's lines leave open carts (cart-host 0.4): found by sale, not by a scan of every
-- line, for as long as the edge keeps the ended sale.
CREATE INDEX cart_lines_sale ON cart_lines (sale_id, held);

-- What customers of this edge id bought and hold in histories a take-over retired, as central
-- last said: their limits count it, as if the orders were still here.
CREATE TABLE retired_units (
    customer_id TEXT NOT NULL,
    sale_id     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    units       INTEGER NOT NULL,
    PRIMARY KEY (customer_id, sale_id, sku)
) WITHOUT ROWID;
