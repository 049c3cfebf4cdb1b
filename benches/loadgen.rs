//! A message-send load generator for any Matrix homeserver, for rates the Python harness
//! (`../shared/bench/mxbench.py`, ~700 msg/s at most) cannot reach. It speaks only the
//! client-server API, as mxbench does: registers users (`m.login.dummy`), makes rooms that all of
//! them join, then sends `m.room.message` events from many concurrent senders
//! (`PUT /send/{type}/{txnId}`) while one receiver long-polls `/sync` and notes when each message
//! arrives. It reports send throughput, send latency, send→sync delivery latency, the server's
//! CPU time per message (from `/proc/<pid>/stat`, with `--pid`) and checks that every message
//! arrived exactly once.
//!
//! ```sh
//! cargo run --release --example loadgen -- --base-url http://127.0.0.1:8029 --pid <PID> [--messages 20000]
//!     [--concurrency 64] [--users 20] [--rooms 10] [--json-out FILE]
//! ```

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Args {
    base_url: String,
    pid: Option<u32>,
    users: usize,
    rooms: usize,
    messages: usize,
    concurrency: usize,
    json_out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        base_url: "http://127.0.0.1:8008".to_owned(),
        pid: None,
        users: 20,
        rooms: 10,
        messages: 20_000,
        concurrency: 64,
        json_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(
                "usage: loadgen --base-url http://127.0.0.1:PORT [--pid PID] [--messages N] \
                        [--concurrency N] [--users N] [--rooms N] [--json-out FILE]"
                    .to_owned(),
            );
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--base-url" => args.base_url = value.trim_end_matches('/').to_owned(),
            "--pid" => args.pid = Some(value.parse().map_err(|e| format!("--pid: {e}"))?),
            "--users" => args.users = number()?.max(1),
            "--rooms" => args.rooms = number()?.max(1),
            "--messages" => args.messages = number()?,
            "--concurrency" => args.concurrency = number()?.max(1),
            "--json-out" => args.json_out = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let host = args
        .base_url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!("refusing a non-loopback target: {}", args.base_url));
    }
    Ok(args)
}

#[derive(Clone)]
struct Homeserver {
    http: Client,
    base: String,
}

impl Homeserver {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        for attempt in 0..5 {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < 4 {
                let wait = body["retry_after_ms"].as_u64().unwrap_or(500).min(5000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            return Ok((status, body));
        }
        Err(format!("{path}: still rate-limited"))
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let (status, reply) = self.call(method, path, token, body).await?;
        if status.is_success() {
            Ok(reply)
        } else {
            Err(format!("{path}: {status} {reply}"))
        }
    }
}

struct User {
    user_id: String,
    token: String,
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn register(hs: &Homeserver, name: &str) -> Result<User, String> {
    let mut body = json!({"username": name, "password": "loadgen-password",
                          "initial_device_display_name": "loadgen"});
    let (status, reply) = hs
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(&body),
        )
        .await?;
    let reply = if status == StatusCode::UNAUTHORIZED {
        body["auth"] = json!({"type": "m.login.dummy", "session": reply["session"]});
        hs.ok(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(&body),
        )
        .await?
    } else if status.is_success() {
        reply
    } else {
        return Err(format!("register {name}: {status} {reply}"));
    };
    Ok(User {
        user_id: reply["user_id"].as_str().unwrap_or_default().to_owned(),
        token: reply["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// `utime + stime` of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 on every architecture.
    Some(ticks / 100.0)
}

fn rss_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    json!({
        "count": values.len(),
        "p50_ms": (percentile(&values, 50.0) * 1000.0).round() / 1000.0,
        "p95_ms": (percentile(&values, 95.0) * 1000.0).round() / 1000.0,
        "p99_ms": (percentile(&values, 99.0) * 1000.0).round() / 1000.0,
        "max_ms": (percentile(&values, 100.0) * 1000.0).round() / 1000.0,
    })
}

/// Long-polls `/sync` as `receiver` and records when each loadgen message first arrives;
/// counts duplicates.
async fn receive(
    hs: Homeserver,
    token: String,
    run: String,
    sent_at: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    arrived: Arc<AtomicUsize>,
) -> Result<(Vec<f64>, usize, usize), String> {
    let filter = json!({"room": {"timeline": {"limit": 1000, "types": ["m.room.message"]},
                                 "state": {"lazy_load_members": true}},
                        "presence": {"types": []}, "account_data": {"types": []}})
    .to_string();
    let initial = hs
        .ok(
            Method::GET,
            &format!(
                "/_matrix/client/v3/sync?timeout=0&filter={}",
                encode(&filter)
            ),
            Some(&token),
            None,
        )
        .await?;
    let mut since = initial["next_batch"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut delays = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let reply = hs
            .ok(
                Method::GET,
                &format!(
                    "/_matrix/client/v3/sync?timeout=2000&since={}&filter={}",
                    encode(&since),
                    encode(&filter)
                ),
                Some(&token),
                None,
            )
            .await?;
        let now = Instant::now();
        since = reply["next_batch"].as_str().unwrap_or(&since).to_owned();
        let Some(rooms) = reply["rooms"]["join"].as_object() else {
            continue;
        };
        let sent = sent_at.lock().await;
        for room in rooms.values() {
            for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                if event["content"]["loadgen_run"] != run.as_str() {
                    continue;
                }
                let Some(txn) = event["content"]["loadgen_txn"].as_str() else {
                    continue;
                };
                let count = seen.entry(txn.to_owned()).or_default();
                *count += 1;
                if *count == 1 {
                    arrived.fetch_add(1, Ordering::Relaxed);
                    if let Some(at) = sent.get(txn) {
                        delays.push(now.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                    }
                }
            }
        }
    }
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    Ok((delays, seen.len(), duplicates))
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let hs = Homeserver {
        http: Client::builder()
            .pool_max_idle_per_host(args.concurrency + 8)
            .build()
            .map_err(|e| e.to_string())?,
        base: args.base_url.clone(),
    };
    let versions = hs
        .ok(Method::GET, "/_matrix/client/versions", None, None)
        .await?;
    eprintln!("loadgen: server answers versions {}", versions["versions"]);
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_millis()
    );

    eprintln!("loadgen: registering {} users", args.users);
    let mut users = Vec::new();
    for i in 0..args.users {
        users.push(register(&hs, &format!("lg{run}u{i}")).await?);
    }
    eprintln!("loadgen: creating {} rooms, everyone joins", args.rooms);
    let mut rooms = Vec::new();
    for _ in 0..args.rooms {
        let invite: Vec<&str> = users[1..].iter().map(|u| u.user_id.as_str()).collect();
        let reply = hs
            .ok(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&users[0].token),
                Some(&json!({"preset": "private_chat", "invite": invite})),
            )
            .await?;
        let room = reply["room_id"].as_str().unwrap_or_default().to_owned();
        for user in &users[1..] {
            hs.ok(
                Method::POST,
                &format!("/_matrix/client/v3/rooms/{}/join", encode(&room)),
                Some(&user.token),
                Some(&json!({})),
            )
            .await?;
        }
        rooms.push(room);
    }

    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicUsize::new(0));
    let receiver = tokio::spawn(receive(
        hs.clone(),
        users[0].token.clone(),
        run.clone(),
        sent_at.clone(),
        stop.clone(),
        arrived.clone(),
    ));
    // Let the receiver's first long-poll start.
    tokio::time::sleep(Duration::from_millis(300)).await;

    eprintln!(
        "loadgen: sending {} messages from {} concurrent senders",
        args.messages, args.concurrency
    );
    let next = Arc::new(AtomicUsize::new(0));
    let users = Arc::new(users);
    let rooms = Arc::new(rooms);
    let cpu_before = args.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..args.concurrency {
        let (hs, next, users, rooms, run, sent_at) = (
            hs.clone(),
            next.clone(),
            users.clone(),
            rooms.clone(),
            run.clone(),
            sent_at.clone(),
        );
        let total = args.messages;
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let user = &users[n % users.len()];
                let room = &rooms[(n / users.len()) % rooms.len()];
                let txn = format!("{run}-{n}");
                let body = json!({"msgtype": "m.text", "body": format!("load {n}"),
                                  "loadgen_run": run, "loadgen_txn": txn});
                let path = format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    encode(room)
                );
                let begin = Instant::now();
                sent_at.lock().await.insert(txn, begin);
                match hs
                    .call(Method::PUT, &path, Some(&user.token), Some(&body))
                    .await
                {
                    Ok((status, _)) if status.is_success() => {
                        latencies.push(begin.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for sender in senders {
        let (mut l, e) = sender.await.map_err(|e| e.to_string())?;
        latencies.append(&mut l);
        errors += e;
    }
    let send_wall = started.elapsed().as_secs_f64();
    let cpu_after = args.pid.and_then(cpu_seconds);
    let sent_ok = latencies.len();

    // Wait (at most 30 s) until the receiver saw everything, then stop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !receiver.is_finished()
        && arrived.load(Ordering::Relaxed) < sent_ok
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (delays, received, duplicates) = receiver.await.map_err(|e| e.to_string())??;

    let server_cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let result = json!({
        "base_url": args.base_url,
        "users": args.users,
        "rooms": args.rooms,
        "messages": args.messages,
        "concurrency": args.concurrency,
        "sent_ok": sent_ok,
        "send_errors": errors,
        "received": received,
        "duplicates": duplicates,
        "lost": sent_ok.saturating_sub(received),
        "send_wall_s": (send_wall * 1000.0).round() / 1000.0,
        "throughput_msg_s": ((sent_ok as f64 / send_wall) * 10.0).round() / 10.0,
        "send_latency": summary(latencies),
        "delivery_latency": summary(delays),
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_msg": server_cpu.map(|cpu| (cpu * 1000.0 / sent_ok.max(1) as f64 * 1000.0).round() / 1000.0),
        "server_rss_mib": args.pid.and_then(|pid| rss_mib(pid, "VmRSS:")),
        "server_peak_rss_mib": args.pid.and_then(|pid| rss_mib(pid, "VmHWM:")),
    });
    println!(
        "sent {sent_ok}/{} ({errors} errors) in {send_wall:.2} s = {} msg/s; send p50/p99 {}/{} ms; \
         delivery p50/p99 {}/{} ms; received {received}, duplicates {duplicates}; server CPU/msg {} ms",
        args.messages,
        result["throughput_msg_s"],
        result["send_latency"]["p50_ms"],
        result["send_latency"]["p99_ms"],
        result["delivery_latency"]["p50_ms"],
        result["delivery_latency"]["p99_ms"],
        result["server_cpu_ms_per_msg"],
    );
    println!("{result}");
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{result:#}\n")).map_err(|e| format!("{path}: {e}"))?;
    }
    if received < sent_ok || duplicates > 0 || errors > 0 {
        return Err(format!(
            "{} lost, {duplicates} duplicated, {errors} failed sends",
            sent_ok.saturating_sub(received)
        ));
    }
    Ok(())
}
