-- OpenID tokens (`POST /user/{userId}/openid/request_token`): another server (an integration
-- manager, a widget's backend) trades one for the user's ID at `/openid/userinfo`. Stored as the
-- SHA-256 of the token, as access tokens are; expired rows are deleted when new tokens are made.
CREATE TABLE openid_tokens (
    token_hash      BLOB PRIMARY KEY,
    user_id         TEXT NOT NULL,
    valid_until_ms  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX openid_tokens_by_expiry ON openid_tokens(valid_until_ms);
