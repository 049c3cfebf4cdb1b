-- Inbound federation transactions already answered: a retried `PUT /send/{txnId}` from the same
-- origin gets the same answer without its PDUs and EDUs being processed again. Kept a day.
CREATE TABLE federation_inbound_transactions (
    origin       TEXT NOT NULL,
    txn_id       TEXT NOT NULL,
    response     TEXT NOT NULL,
    received_ts  INTEGER NOT NULL,
    PRIMARY KEY (origin, txn_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX federation_inbound_transactions_by_time ON federation_inbound_transactions(received_ts);
