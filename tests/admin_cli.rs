//! `appliance admin …` against a running server: its changes are seen over HTTP at once; and
//! backups made while it runs, restored on a new box.
use crate::common;

use std::{path::Path, time::Duration};

use common::{
    MessageLoad, OPEN_REGISTRATION, Session, TestServer, appliance, assert_error, assert_failure,
    assert_success, path_str, room_event_ids,
};
use reqwest::Method;
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

/// The columns of `admin list-users` for `user_id`: user, admin, deactivated, created, last seen.
fn user_row(server: &TestServer, user_id: &str) -> Option<Vec<String>> {
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    let mut lines = listing.lines();
    let header = lines.next().expect("a header line");
    assert!(
        header.starts_with("USER") && header.contains("ADMIN"),
        "{listing}"
    );
    lines
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|columns| columns.first().map(String::as_str) == Some(user_id))
}

#[tokio::test]
async fn add_user_then_log_in_over_http() {
    let server = TestServer::start().await;
    let output = server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    );
    let out = assert_success(&output);
    assert!(out.contains("@bob:test.local"), "{out}");
    let bob = server.login_session("bob", "pw").await;
    assert_eq!(bob.user_id, "@bob:test.local");
    // The newline is not part of the password.
    assert_error(&server.login("bob", "pw\n").await, 403, "M_FORBIDDEN");
    let (status, body) = server
        .get(
            "/_matrix/client/v3/profile/@bob:test.local/displayname",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "bob");

    let row = user_row(&server, "@bob:test.local").expect("bob is listed");
    assert_eq!(row[1], "no", "not an admin: {row:?}");
    assert_eq!(row[2], "no", "not deactivated: {row:?}");
}

#[tokio::test]
async fn adding_an_existing_user_fails_clearly() {
    let server = TestServer::start().await;
    server.register("bob", "original").await;
    let output = server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("other\n"),
    );
    let stderr = assert_failure(&output);
    assert!(
        stderr.contains("@bob:test.local") && stderr.contains("already exists"),
        "{stderr}"
    );
    server.login_session("bob", "original").await;
    assert_error(&server.login("bob", "other").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn invalid_user_names_are_refused() {
    let server = TestServer::start().await;
    for bad in ["bad name", "_bridge", "1234", "Bob!", "@bob:other.server"] {
        let output = server.cli(
            &["admin", "add-user", bad, "--password-stdin"],
            Some("pw\n"),
        );
        let stderr = assert_failure(&output);
        assert!(stderr.starts_with("error:"), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    assert_eq!(listing.lines().count(), 1, "nobody was created: {listing}");
}

#[tokio::test]
async fn add_user_needs_a_password() {
    let server = TestServer::start().await;
    let stderr =
        assert_failure(&server.cli(&["admin", "add-user", "bob", "--password-stdin"], Some("")));
    assert!(stderr.contains("password"), "{stderr}");
    // Without --password-stdin and without a terminal, it refuses rather than hangs.
    let stderr = assert_failure(&server.cli(&["admin", "add-user", "bob"], Some("pw\n")));
    assert!(stderr.contains("--password-stdin"), "{stderr}");
    assert!(user_row(&server, "@bob:test.local").is_none());
}

#[tokio::test]
async fn add_user_accepts_a_full_user_id() {
    let server = TestServer::start().await;
    assert_success(&server.cli(
        &["admin", "add-user", "@carol:test.local", "--password-stdin"],
        Some("pw\n"),
    ));
    let carol = server.login_session("carol", "pw").await;
    assert_eq!(carol.user_id, "@carol:test.local");
}

#[tokio::test]
async fn add_user_can_make_an_admin() {
    let server = TestServer::start().await;
    let out = assert_success(&server.cli(
        &["admin", "add-user", "root", "--admin", "--password-stdin"],
        Some("pw\n"),
    ));
    assert!(out.contains("admin"), "{out}");
    assert_eq!(user_row(&server, "@root:test.local").unwrap()[1], "yes");
}

#[tokio::test]
async fn reset_password_signs_out_at_once() {
    let server = TestServer::start().await;
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("old-pw\n"),
    ));
    let bob = server.login_session("bob", "old-pw").await;
    assert_eq!(server.whoami(&bob.access_token).await.0, 200);

    let out = assert_success(&server.cli(
        &["admin", "reset-password", "bob", "--password-stdin"],
        Some("new-pw\n"),
    ));
    assert!(out.contains("@bob:test.local"), "{out}");
    assert_error(
        &server.whoami(&bob.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&server.login("bob", "old-pw").await, 403, "M_FORBIDDEN");
    let bob = server.login_session("bob", "new-pw").await;

    // A full user ID works the same.
    assert_success(&server.cli(
        &[
            "admin",
            "reset-password",
            "@bob:test.local",
            "--password-stdin",
        ],
        Some("newer-pw\n"),
    ));
    assert_error(
        &server.whoami(&bob.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    server.login_session("bob", "newer-pw").await;
    assert_error(&server.login("bob", "new-pw").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn commands_on_unknown_users_fail() {
    let server = TestServer::start().await;
    for args in [
        &["admin", "reset-password", "nobody", "--password-stdin"][..],
        &["admin", "set-admin", "nobody", "true"],
        &["admin", "deactivate", "@nobody:test.local"],
        &["admin", "set-admin", "@bob:other.server", "true"],
    ] {
        let stderr = assert_failure(&server.cli(args, Some("pw\n")));
        assert!(
            stderr.contains("nobody") || stderr.contains("other.server"),
            "{args:?}: {stderr}"
        );
    }
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    assert_eq!(listing.lines().count(), 1, "nobody was created: {listing}");
}

#[tokio::test]
async fn list_users_shows_admins_and_set_admin_changes_it() {
    let server = TestServer::start().await;
    server.register("alice", "pw").await;
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    let alice = user_row(&server, "@alice:test.local").expect("alice listed");
    let bob = user_row(&server, "@bob:test.local").expect("bob listed");
    assert_eq!((alice[1].as_str(), bob[1].as_str()), ("no", "no"));
    assert_ne!(alice[4], "-", "alice has been seen: {alice:?}");

    let out = assert_success(&server.cli(&["admin", "set-admin", "bob", "true"], None));
    assert!(out.contains("@bob:test.local"), "{out}");
    assert_eq!(user_row(&server, "@bob:test.local").unwrap()[1], "yes");
    assert_eq!(user_row(&server, "@alice:test.local").unwrap()[1], "no");

    assert_success(&server.cli(&["admin", "set-admin", "@alice:test.local", "true"], None));
    assert_success(&server.cli(&["admin", "set-admin", "bob", "false"], None));
    assert_eq!(user_row(&server, "@alice:test.local").unwrap()[1], "yes");
    assert_eq!(user_row(&server, "@bob:test.local").unwrap()[1], "no");

    assert_failure(&server.cli(&["admin", "set-admin", "bob", "maybe"], None));
}

#[tokio::test]
async fn deactivate_ends_the_account() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let out = assert_success(&server.cli(&["admin", "deactivate", "bob"], None));
    assert!(out.contains("@bob:test.local"), "{out}");
    assert_error(
        &server.whoami(&bob.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&server.login("bob", "pw").await, 403, "M_FORBIDDEN");
    assert_eq!(user_row(&server, "@bob:test.local").unwrap()[2], "yes");

    assert_success(&server.cli(&["admin", "deactivate", "@carol:test.local"], None));
    assert_error(&server.login("carol", "pw").await, 403, "M_FORBIDDEN");
    assert_error(
        &server.whoami(&carol.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // The name stays taken, for the API and the CLI.
    assert_error(
        &server
            .get("/_matrix/client/v3/register/available?username=bob", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
    let stderr = assert_failure(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[tokio::test]
async fn admin_commands_work_with_the_server_stopped() {
    let mut server = TestServer::start().await;
    server.stop();
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    server.relaunch();
    server.login_session("bob", "pw").await;
}

/// An admin command opens the media store too; an upload the server is receiving at that
/// moment still completes.
#[tokio::test]
async fn an_admin_command_leaves_uploads_in_progress_alone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let address = server.base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = vec![b'u'; 256 * 1024];
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        alice.access_token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    // The first half is in the server's `tmp/` file by now.
    let tmp = server.data_dir.join("media_store/tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_success(&server.cli(&["admin", "list-users"], None));
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut reply))
        .await
        .expect("an answer")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Uploads device keys for `session`'s device, self-signed with a new ed25519 key; returns them.
async fn upload_device_keys(server: &TestServer, session: &Session) -> Value {
    let device = &session.device_id;
    let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device.clone()).unwrap();
    let public = Base64::<Standard>::new(pair.public_key().to_vec()).encode();
    let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
        "user_id": session.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): Base64::<Standard>::new([7u8; 32].to_vec()).encode(),
            format!("ed25519:{device}"): public,
        },
    }))
    .unwrap();
    sign_json(&session.user_id, &pair, &mut keys).unwrap();
    let keys = serde_json::to_value(keys).unwrap();
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/upload",
            session.token(),
            json!({"device_keys": keys}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    keys
}

async fn upload_media(server: &TestServer, session: &Session, bytes: Vec<u8>) -> String {
    let reply = common::send(
        server
            .builder(Method::POST, "/_matrix/media/v3/upload")
            .bearer_auth(&session.access_token)
            .header("content-type", "application/octet-stream")
            .body(bytes),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["content_uri"].as_str().unwrap().to_owned()
}

async fn download(server: &TestServer, session: &Session, mxc: &str) -> (u16, Vec<u8>) {
    let path = mxc.strip_prefix("mxc://").unwrap();
    let response = server
        .builder(
            Method::GET,
            &format!("/_matrix/client/v1/media/download/{path}"),
        )
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn create_room(server: &TestServer, session: &Session) -> String {
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", session.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

/// `appliance admin backup DEST` for `server`, run on a blocking thread so that the test's
/// clients go on meanwhile.
async fn backup(server: &TestServer, dest: &Path) -> std::process::Output {
    let args: Vec<String> = [
        "--config",
        path_str(&server.config_path),
        "--data-dir",
        path_str(&server.data_dir),
        "admin",
        "backup",
        path_str(dest),
    ]
    .map(str::to_owned)
    .to_vec();
    tokio::task::spawn_blocking(move || {
        appliance(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)
    })
    .await
    .unwrap()
}

fn media_files(backup: &Path) -> Vec<std::path::PathBuf> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .filter(|p| p.starts_with("media/"))
        .map(|p| backup.join(p))
        .collect()
}

/// A backup made while clients keep sending messages restores on a new box: every message
/// acknowledged before it started (and no half of anything later), the media byte for byte,
/// the account, its session and device keys, and the server's signing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_made_under_write_load_restores_on_a_new_box() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let keys = upload_device_keys(&server, &alice).await;
    let picture: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mxc = upload_media(&server, &alice, picture.clone()).await;
    let room = create_room(&server, &alice).await;
    let load = MessageLoad::start(&server, &alice.access_token, &room, 6, "load");
    while load.acknowledged().len() < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_backup = load.acknowledged();
    let dest = server.dir.path().join("backup");
    let out = assert_success(&backup(&server, &dest).await);
    assert!(out.contains("1 media files"), "{out}");
    let all = load.finish().await;
    assert!(
        all.len() > before_backup.len(),
        "the clients kept writing during the backup"
    );
    let original_timeline = room_event_ids(&server, &alice.access_token, &room).await;
    let (_, original_key) = server.get("/_matrix/key/v2/server", None).await;

    // While the server runs, its data directory cannot be restored over.
    let stderr = assert_failure(&server.cli(&["admin", "restore", path_str(&dest)], None));
    assert!(
        stderr.contains(&format!("PID {}", server.pid())),
        "{stderr}"
    );

    let mut new_box = TestServer::prepare(OPEN_REGISTRATION);
    let out = assert_success(&new_box.cli(&["admin", "restore", path_str(&dest)], None));
    assert!(out.contains("restored"), "{out}");
    new_box.relaunch();

    let timeline = room_event_ids(&new_box, &alice.access_token, &room).await;
    eprintln!(
        "acknowledged: {} before the backup, {} in all; restored timeline: {} of {}",
        before_backup.len(),
        all.len(),
        timeline.len(),
        original_timeline.len()
    );
    for id in &before_backup {
        assert!(
            timeline.contains(id),
            "{id}, acknowledged before the backup, is missing"
        );
    }
    // One snapshot: the events up to some point of the original's timeline, nothing else.
    assert_eq!(
        timeline[..],
        original_timeline[..timeline.len()],
        "the restored room is not a prefix of the original"
    );
    assert_eq!(new_box.whoami(&alice.access_token).await.0, 200);
    new_box.login_session("alice", "pw").await;
    assert_eq!(download(&new_box, &alice, &mxc).await, (200, picture));
    let (status, body) = new_box
        .post(
            "/_matrix/client/v3/keys/query",
            alice.token(),
            json!({"device_keys": {&alice.user_id: []}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["device_keys"][&alice.user_id][&alice.device_id]["keys"], keys["keys"],
        "{body}"
    );
    let (_, key) = new_box.get("/_matrix/key/v2/server", None).await;
    assert_eq!(key["verify_keys"], original_key["verify_keys"]);
    assert!(
        key["verify_keys"]
            .as_object()
            .is_some_and(|k| !k.is_empty())
    );
    // And it goes on from there.
    let (status, body) = new_box
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after"),
            alice.token(),
            json!({"msgtype": "m.text", "body": "after the restore"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Restore checks every file before it changes anything, writes a config on a box that has
/// none, and replaces an existing database only with --force.
#[tokio::test]
async fn restore_refuses_a_damaged_backup_and_an_existing_database() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let mxc = upload_media(&server, &alice, b"backed-up bytes".to_vec()).await;
    let dest = server.dir.path().join("backup");
    assert_success(&backup(&server, &dest).await);
    let out = assert_success(&server.cli(&["admin", "verify-backup", path_str(&dest)], None));
    assert!(out.contains("good"), "{out}");
    // A backup folder is never overwritten.
    let stderr = assert_failure(&backup(&server, &dest).await);
    assert!(stderr.contains("not empty"), "{stderr}");

    // A new box without even a config file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let data = dir.path().join("data");
    let restore = |force: bool| {
        let mut args = vec![
            "--config",
            path_str(&config),
            "--data-dir",
            path_str(&data),
            "admin",
            "restore",
            path_str(&dest),
        ];
        if force {
            args.push("--force");
        }
        appliance(&args, None)
    };

    for damaged in [
        media_files(&dest)[0].clone(),
        dest.join("data/appliance.db"),
    ] {
        let original = std::fs::read(&damaged).unwrap();
        let mut flipped = original.clone();
        flipped[original.len() / 2] ^= 0x01;
        std::fs::write(&damaged, &flipped).unwrap();
        let stderr = assert_failure(&restore(true));
        assert!(
            stderr.contains("damaged") && stderr.contains(path_str(&damaged)),
            "{stderr}"
        );
        assert!(!data.join("appliance.db").exists(), "nothing is restored");
        assert!(!config.exists(), "nothing is restored");
        let stderr =
            assert_failure(&server.cli(&["admin", "verify-backup", path_str(&dest)], None));
        assert!(stderr.contains("damaged"), "{stderr}");
        std::fs::write(&damaged, &original).unwrap();
    }

    let out = assert_success(&restore(false));
    assert!(out.contains("config written"), "{out}");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(&server.config_path).unwrap()
    );
    // Now there is a database, and a config that differs: a second restore needs --force, and
    // keeps what it replaces.
    let edited = format!("{}# edited\n", std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, &edited).unwrap();
    let stderr = assert_failure(&restore(false));
    assert!(
        stderr.contains("--force")
            && stderr.contains(path_str(&data.join("appliance.db")))
            && stderr.contains(path_str(&config)),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    let out = assert_success(&restore(true));
    assert!(out.contains("appliance.db.before-restore"), "{out}");
    assert!(data.join("appliance.db.before-restore").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.yaml.before-restore")).unwrap(),
        edited
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(&server.config_path).unwrap()
    );

    let mut new_box = TestServer::prepare(OPEN_REGISTRATION);
    new_box.config_path = config.clone();
    new_box.data_dir = data.clone();
    new_box.relaunch();
    new_box.login_session("alice", "pw").await;
    assert_eq!(
        download(&new_box, &alice, &mxc).await,
        (200, b"backed-up bytes".to_vec())
    );
}

/// `backup_schedule` makes a backup at the time set and deletes the scheduled backups older
/// than `keep_days`, and nothing else in the folder.
#[tokio::test]
async fn scheduled_backups_are_made_and_old_ones_deleted() {
    let backups = tempfile::tempdir().unwrap();
    let old = backups.path().join("backup-20200101T033000Z");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("manifest.json"),
        json!({"format": "matrix-appliance-backup", "format_version": 1,
               "created": "2020-01-01T03:30:00Z", "created_ms": 1_577_849_400_000i64,
               "appliance_version": "0.1.0", "schema_version": 1, "server_name": "test.local",
               "files": []})
        .to_string(),
    )
    .unwrap();
    let unrelated = backups.path().join("backup-notes");
    std::fs::create_dir_all(&unrelated).unwrap();

    // A few seconds from now on the box's local clock (the server reads the same clock).
    let local_time = |seconds_from_now: u64| {
        let at = std::time::SystemTime::now() + Duration::from_secs(seconds_from_now);
        let epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let output = std::process::Command::new("date")
            .args([format!("--date=@{epoch}"), "+%H:%M:%S".to_owned()])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    // Enough ahead for a slow start on a loaded machine: the server reads the time once it runs.
    if local_time(30) < local_time(0) {
        // Midnight is near: the time would be tomorrow's.
        tokio::time::sleep(Duration::from_secs(32)).await;
    }
    let time = local_time(15);
    let mut server = TestServer::start_with_config(&format!(
        "{OPEN_REGISTRATION}backup_schedule: \
         {{enabled: true, time: \"{time}\", directory: {}, keep_days: 1}}\n",
        path_str(backups.path())
    ))
    .await;
    server.register("alice", "pw").await;

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let made = loop {
        let made = std::fs::read_dir(backups.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p != &old && p != &unrelated && p.join("manifest.json").exists());
        if let Some(made) = made
            && !old.exists()
        {
            break made;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled backup at {time}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        made.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("backup-"),
        "{made:?}"
    );
    assert!(unrelated.exists(), "only scheduled backups are deleted");
    assert_success(&server.cli(&["admin", "verify-backup", path_str(&made)], None));
    assert!(server.log_text().contains("scheduled backup made"));
    // The schedule's task does not hold up a clean stop.
    assert!(server.stop());
}

/// Abuse reports sent over HTTP reach the admins' CLI: an event report (only for an event the
/// reporter may see: an unknown event and one of a room they are not in are the same `404`), a
/// room report (`404` for an unknown room), a user report (`200` whoever the user), listed,
/// shown and resolved. And Element's
/// `GET /_synapse/admin/v1/users/{userId}/admin`: `403` until the asker is an admin.
#[tokio::test]
async fn abuse_reports_reach_the_admin_cli() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{room}"),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            alice.token(),
            json!({"msgtype": "m.text", "body": "spam spam spam"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event_id = body["event_id"].as_str().unwrap().to_owned();
    // A room bob is not in, with an event of its own.
    let private = create_room(&server, &alice).await;
    let private_event = room_event_ids(&server, alice.token().unwrap(), &private).await;
    let private_event = private_event.last().expect("the private room has events");

    let report =
        |room: &str, event: &str| format!("/_matrix/client/v3/rooms/{room}/report/{event}");
    // \u{1b} must not reach the admin's terminal.
    let reason = "spam\u{1b}[31m, again";
    let (status, body) = server
        .post(
            &report(&room, &event_id),
            bob.token(),
            json!({"reason": reason, "score": -100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({}));
    for (room, event) in [(&room, "$unknown"), (&private, private_event.as_str())] {
        let answer = server
            .post(&report(room, event), bob.token(), json!({"reason": "x"}))
            .await;
        assert_error(&answer, 404, "M_NOT_FOUND");
    }
    let room_report = |room: &str| format!("/_matrix/client/v3/rooms/{room}/report");
    let (status, body) = server
        .post(
            &room_report(&private),
            bob.token(),
            json!({"reason": "a spam room"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = server
        .post(
            &room_report("!nowhere:test.local"),
            bob.token(),
            json!({"reason": "x"}),
        )
        .await;
    assert_error(&answer, 404, "M_NOT_FOUND");
    // A user report (spec 1.14): stored for a user of this server; for an unknown or a remote
    // user the same `200 {}` (hiding who exists, as Synapse does), and nothing stored.
    let user_report = |user: &str| format!("/_matrix/client/v3/users/{user}/report");
    for user in [
        "@alice:test.local",
        "@nobody:test.local",
        "@eve:elsewhere.example",
    ] {
        let (status, body) = server
            .post(
                &user_report(user),
                bob.token(),
                json!({"reason": "harasses me"}),
            )
            .await;
        assert_eq!((status.as_u16(), &body), (200, &json!({})), "{user}");
    }
    let answer = server
        .post(&user_report("@alice:test.local"), bob.token(), json!({}))
        .await;
    assert_eq!(answer.0, 400, "the reason is required: {}", answer.1);
    assert_error(
        &server
            .post(
                &user_report("@alice:test.local"),
                None,
                json!({"reason": "x"}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    let listing = assert_success(&server.cli(&["admin", "reports", "list"], None));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three reports: {listing}");
    assert!(
        lines[3].contains("@alice:test.local") && lines[3].contains("harasses me"),
        "{listing}"
    );
    let user_id = lines[3].split_whitespace().next().unwrap().to_owned();
    let shown = assert_success(&server.cli(&["admin", "reports", "show", &user_id], None));
    assert!(
        shown.contains("user:      @alice:test.local") && !shown.contains("room:"),
        "{shown}"
    );
    assert!(
        lines[1].contains("@bob:test.local") && lines[1].contains(&event_id),
        "{listing}"
    );
    assert!(
        lines[2].contains(&private) && lines[2].contains("a spam room"),
        "{listing}"
    );
    assert!(!listing.contains('\u{1b}'), "{listing:?}");
    let id = lines[1].split_whitespace().next().unwrap().to_owned();
    let shown = assert_success(&server.cli(&["admin", "reports", "show", &id], None));
    for expected in [
        event_id.as_str(),
        "@alice:test.local",
        &room,
        "spam [31m, again",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    assert!(shown.contains("resolved:  no"), "{shown}");
    assert_success(&server.cli(&["admin", "reports", "resolve", &id, "--by", "carol"], None));
    let listing = assert_success(&server.cli(&["admin", "reports", "list"], None));
    assert_eq!(listing.lines().count(), 3, "two left: {listing}");
    let listing = assert_success(&server.cli(&["admin", "reports", "list", "--all"], None));
    assert_eq!(
        listing.lines().count(),
        4,
        "all three with --all: {listing}"
    );
    let shown = assert_success(&server.cli(&["admin", "reports", "show", &id], None));
    assert!(shown.contains("by carol"), "{shown}");
    assert_failure(&server.cli(&["admin", "reports", "resolve", "999"], None));

    let is_admin = |user: &str| format!("/_synapse/admin/v1/users/{user}/admin");
    let answer = server
        .get(&is_admin("@alice:test.local"), bob.token())
        .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    assert_error(
        &server.get(&is_admin("@bob:test.local"), None).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_success(&server.cli(&["admin", "set-admin", "bob", "true"], None));
    for (user, admin) in [("@bob:test.local", true), ("@alice:test.local", false)] {
        let (status, body) = server.get(&is_admin(user), bob.token()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"admin": admin}));
    }
    let answer = server
        .get(&is_admin("@someone:elsewhere.example"), bob.token())
        .await;
    assert_error(&answer, 400, "M_UNKNOWN");
}
