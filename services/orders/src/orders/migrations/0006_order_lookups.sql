-- The operators' look-ups without scanning: an order's license keys (every order page and each order of a
-- search read them; with 150,000 keys the scan was ~20 ms an order, ~1.6 s for a purchaser of 40 orders),
-- and an order by its id at the shop, whatever the source (the unique key leads with the source).
CREATE INDEX license_keys_order ON license_keys (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX orders_shop_order_id ON orders (order_id);
