-- Each customer's home edge: the edge that keeps all of the customer's carts, so that the
-- per-customer limit is counted in one place across the fleet. Recorded by the first edge a
-- customer's cart is created on. Homes do not move yet: a customer whose home edge is gone for
-- good gets no new cart until the drain hand-off, which will move carts, moves homes too.
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    since       BIGINT NOT NULL
);
