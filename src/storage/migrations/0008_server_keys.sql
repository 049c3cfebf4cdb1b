-- Other servers' signing keys, fetched directly or through a notary. A key is good for
-- signatures made up to `valid_until_ts` (a current key, from `verify_keys`) or up to
-- `expired_ts` (a key the server no longer uses, from `old_verify_keys`).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- Unpadded base64 public key.
    key TEXT NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    expired_ts INTEGER,
    -- The server's signed answer the key came from (canonical JSON, its own signatures only),
    -- handed on by this server as a notary.
    answer TEXT NOT NULL,
    -- When this row was written (ms).
    fetched_ts INTEGER NOT NULL,
    PRIMARY KEY (server_name, key_id)
) WITHOUT ROWID;
