-- Live invoice status (api/live.py, api/invoice_stream.py).

-- name: live_ping
-- The hub's listening connection is still there (a silent network looks idle).
SELECT 1;

-- name: live_invoice_seq
-- The invoice's newest event (0: none yet): part of each SSE message id, so a stream
-- resumed with Last-Event-ID sends a state again only when an event came since.
SELECT coalesce(max(id), 0) FROM events WHERE resource = 'invoice' AND resource_id = $1;
