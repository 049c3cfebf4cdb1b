use crate::common;

use common::{TestServer, assert_error};

#[tokio::test]
async fn register_login_whoami() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    assert_eq!(alice.user_id, "@alice:test.local");
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", alice.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    assert_eq!(body["device_id"], alice.device_id.as_str());
    let (status, body) = server.login("alice", "correct horse").await;
    assert_eq!(status, 200, "{body}");
    assert_error(&server.login("alice", "wrong").await, 403, "M_FORBIDDEN");
}
