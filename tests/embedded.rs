//! The README's run command on the embedded default (librdkafka's mock cluster):
//! `courier demo` round-trips every command and exits 0; `courier dev` serves the
//! HTTP gateway next to its worker and stops cleanly on SIGTERM. These prove the
//! no-install path works, not Kafka behaviour (the other suites do that on a real
//! broker).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[test]
fn demo_round_trips_every_command_on_the_embedded_cluster() {
    let out = Command::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
        .args(["demo", "--count", "60"])
        .env_remove("COURIER_BOOTSTRAP")
        .output()
        .expect("run courier demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("embedded mock cluster"), "{stdout}");
    assert!(stdout.contains("every command got its expected final event"), "{stdout}");
    // The figures start after the group join, and a clean exit warns of nothing.
    assert!(stdout.contains("worker ready after"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("WARN") && !stderr.contains("AllBrokersDown"), "a clean exit logged warnings:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_the_gateway_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
        .args(["dev", "--every", "200ms", "--gateway-listen", "127.0.0.1:0"])
        .env_remove("COURIER_BOOTSTRAP")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn courier dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The hint line names the gateway's actual address: "curl -si 127.0.0.1:PORT/v1/commands ...".
    let until = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut broker = None;
    let addr = loop {
        assert!(Instant::now() < until, "no gateway address printed:\n{}", seen.join("\n"));
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
        if let Some(rest) = line.trim().strip_prefix("courier dev: broker ") {
            broker = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.trim().strip_prefix("curl -si ") {
            break rest.split("/v1/").next().unwrap_or_default().to_string();
        }
        seen.push(line);
    };
    let http = reqwest::Client::new();
    let accepted = http
        .post(format!("http://{addr}/v1/commands"))
        .json(&json!({"type": "primes", "payload": {"n": 1000}}))
        .send()
        .await
        .expect("POST /v1/commands");
    assert_eq!(accepted.status(), 202);
    let location = accepted.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let op: Value = http.get(format!("http://{addr}{location}?wait=30s")).send().await.unwrap().json().await.unwrap();
    assert_eq!((op["done"].as_bool(), op["metadata"]["state"].as_str()), (Some(true), Some("completed")), "{op}");
    assert_eq!(op["response"], json!({"n": 1000, "primes": 168}));

    // `courier status` finds it on the mock cluster too, which cannot look offsets
    // up by time (the lookup falls back to the partition's start there).
    let broker = broker.expect("the broker's address was printed");
    let id = location.rsplit('/').next().unwrap_or_default();
    let out = Command::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true").args(["status", "--bootstrap", &broker, id]).env_remove("COURIER_BOOTSTRAP").output().expect("courier status");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains("\"state\":\"completed\""), "courier status {id}: {printed}{}", String::from_utf8_lossy(&out.stderr));

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < until, "courier dev did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}
