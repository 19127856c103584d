//! Courier on a secured Kafka: a broker of its own, started by `scripts/kafka.sh
//! start-secure` (SASL_SSL with SCRAM-SHA-512, the StandardAuthorizer, nothing
//! allowed without an ACL, certificates made with openssl), beside the suite's plain
//! one.
//!
//! 1. A least-privilege deployment: a worker, a gateway, a webhook dispatcher and a
//!    library client, each its own principal holding exactly the ACLs the README lists
//!    for it ([`acls`]), run the core round trip: commands from the client and through
//!    the gateway all complete, and a webhook is delivered.
//! 2. A missing grant stops a component at start, naming the topic, group or
//!    transactional id and the operation: a worker without WRITE on results, the
//!    client's principal run as a worker, a gateway that cannot read the delivery log,
//!    a dispatcher outside its group, an exactly-once worker without its transactional
//!    ids; a wrong password is refused at once.
//!
//! No component's log ever holds a password.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::{Client, NewCommand, State};
use courier::topics::{create_topics, TopicSpec};
use courier::KafkaArgs;
use serde_json::{json, Value};

/// The secure broker; stopped on drop.
struct SecureBroker {
    run: PathBuf,
    bootstrap: String,
    ca: String,
    admin_password: String,
}

impl SecureBroker {
    fn start() -> SecureBroker {
        let run = std::env::temp_dir().join(format!("courier-secure-kafka-{}", std::process::id()));
        let out = script(&run, "start-secure").output().expect("run scripts/kafka.sh start-secure");
        assert!(out.status.success(), "start-secure failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name} in {text}")).trim().to_string();
        let admin_password = std::fs::read_to_string(run.join("admin.password")).expect("admin password").trim().to_string();
        let properties = std::fs::metadata(value("COURIER_KAFKA_ADMIN=")).expect("admin properties");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(properties.permissions().mode() & 0o077, 0, "the admin's properties are the owner's alone");
        SecureBroker { bootstrap: value("COURIER_BOOTSTRAP="), ca: value("COURIER_KAFKA_CA="), admin_password, run }
    }

    /// Applies `user`/`allow` lines (scripts/kafka/Grants.java) and waits for them.
    fn grant(&self, lines: &str) {
        let mut child = script(&self.run, "admin").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kafka.sh admin");
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write grants");
        let out = child.wait_with_output().expect("kafka.sh admin");
        assert!(out.status.success(), "grants refused: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// librdkafka options that log in as `user`.
    fn opts(&self, user: &User) -> Vec<String> {
        vec![
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanism=SCRAM-SHA-512".into(),
            format!("sasl.username={}", user.name),
            format!("sasl.password={}", user.password),
            format!("ssl.ca.location={}", self.ca),
        ]
    }

    fn kafka(&self, prefix: &str, user: &User) -> KafkaArgs {
        KafkaArgs { kafka_opts: self.opts(user), ..KafkaArgs::new(&self.bootstrap, prefix) }
    }

    fn admin(&self) -> User {
        User { name: "admin".into(), password: self.admin_password.clone() }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = script(&self.run, "stop").output();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

fn script(run: &Path, verb: &str) -> Proc {
    let mut cmd = Proc::new("bash");
    cmd.arg(common::repo().join("scripts/kafka.sh")).arg(verb).env("COURIER_KAFKA_RUN", run);
    cmd
}

/// A SCRAM principal with a random password.
struct User {
    name: String,
    password: String,
}

impl User {
    fn new(name: &str) -> User {
        let mut bytes = [0u8; 18];
        openssl::rand::rand_bytes(&mut bytes).expect("random password");
        User { name: name.into(), password: format!("pw-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()) }
    }

    fn line(&self) -> String {
        format!("user {} {}\n", self.name, self.password)
    }
}

/// The ACLs each component needs, as README's "Secured Kafka" table lists them, for
/// topics under `p` and consumer group `g`, as `allow` lines for `user`. `without`
/// leaves out lines containing it (a missing grant).
fn acls(component: &str, user: &User, p: &str, g: &str, without: Option<&str>) -> String {
    let rules: Vec<String> = match component {
        "worker" => vec![
            format!("READ TOPIC LITERAL {p}.commands"),
            format!("WRITE TOPIC LITERAL {p}.commands"),
            format!("READ TOPIC PREFIXED {p}.commands.retry."),
            format!("WRITE TOPIC PREFIXED {p}.commands.retry."),
            format!("WRITE TOPIC LITERAL {p}.commands.dlq"),
            format!("READ TOPIC LITERAL {p}.results"),
            format!("WRITE TOPIC LITERAL {p}.results"),
            format!("WRITE TOPIC LITERAL {p}.status"),
            format!("READ TOPIC LITERAL {p}.control"),
            format!("WRITE TOPIC LITERAL {p}.control"),
            format!("READ GROUP LITERAL {g}"),
            format!("READ GROUP LITERAL {g}.retry"),
            format!("WRITE TRANSACTIONAL_ID PREFIXED courier-{g}-"),
        ],
        "gateway" => vec![
            format!("WRITE TOPIC LITERAL {p}.commands"),
            format!("WRITE TOPIC LITERAL {p}.control"),
            format!("READ TOPIC LITERAL {p}.status"),
            format!("WRITE TOPIC LITERAL {p}.status"),
            format!("WRITE TOPIC LITERAL {p}.results"),
            format!("READ TOPIC LITERAL {p}.webhooks.log"),
        ],
        "dispatcher" => vec![
            format!("READ TOPIC LITERAL {p}.results"),
            format!("READ TOPIC LITERAL {p}.status"),
            format!("READ TOPIC LITERAL {p}.webhooks.log"),
            format!("WRITE TOPIC LITERAL {p}.webhooks.log"),
            format!("READ TOPIC LITERAL {p}.webhooks.endpoints"),
            format!("WRITE TOPIC LITERAL {p}.webhooks.endpoints"),
            format!("WRITE TOPIC LITERAL {p}.webhooks.dlq"),
            format!("READ TOPIC PREFIXED {p}.webhooks.retry."),
            format!("WRITE TOPIC PREFIXED {p}.webhooks.retry."),
            format!("READ GROUP LITERAL {g}"),
        ],
        "client" => vec![
            format!("WRITE TOPIC LITERAL {p}.commands"),
            format!("WRITE TOPIC LITERAL {p}.control"),
            format!("READ TOPIC LITERAL {p}.status"),
            format!("READ TOPIC LITERAL {p}.results"),
        ],
        other => panic!("no ACL set for {other}"),
    };
    // Every component reads topics through never-joined groups of its followers.
    let rules = [rules, vec![format!("DESCRIBE GROUP PREFIXED {p}.follower-")]].concat();
    let mut out = user.line();
    for rule in rules.iter().filter(|r| without.is_none_or(|w| !r.contains(w))) {
        let mut words = rule.splitn(2, ' ');
        let (operation, rest) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        out.push_str(&format!("allow User:{} {operation} {rest}\n", user.name));
    }
    out
}

/// A Courier child process logging into a file of its own; killed on drop.
struct Component {
    child: Child,
    log: PathBuf,
}

impl Component {
    fn spawn(dir: &Path, name: &str, args: &[&str], kafka_opts: &[String]) -> Component {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Proc::new(env!("CARGO_BIN_EXE_courier"))
            .args(args)
            // Credentials the way an operator passes them: the env var, not argv.
            .env("COURIER_KAFKA_OPTS", kafka_opts.join(","))
            .env("COURIER_INSECURE_NO_AUTH", "true")
            // Read by the dispatcher only.
            .env("COURIER_WEBHOOK_SECRETS", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .env("RUST_LOG", "info,courier=debug,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("spawn courier");
        Component { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited ({status}) before {needle:?}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no {needle:?} within {timeout:?}: {}", self.log_text());
    }

    /// Waits for the process to end on its own: a refusal at start. Its log.
    fn refused(mut self, within: Duration) -> String {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(!status.success(), "a refused start exits non-zero: {}", self.log_text());
                return self.log_text();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("still running after {within:?}, expected a refusal at start: {}", self.log_text());
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver on loopback that counts what it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().expect("addr").port());
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn base_args<'a>(verb: &'a [&'a str], broker: &'a SecureBroker, prefix: &'a str) -> Vec<&'a str> {
    let mut args = verb.to_vec();
    args.extend(["--bootstrap", broker.bootstrap.as_str(), "--prefix", prefix]);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn a_least_privilege_deployment_runs_on_sasl_ssl_and_a_missing_grant_stops_a_component_at_start() {
    let broker = SecureBroker::start();
    let p = format!("sec-{}", &courier::envelope::new_id().simple().to_string()[24..]);
    let (wg, dg) = (format!("{p}-workers"), format!("{p}-webhooks"));
    let dir = std::env::temp_dir().join("courier-test-logs").join(&p);
    std::fs::create_dir_all(&dir).expect("log dir");
    let [worker, gateway, dispatcher, client] = ["worker", "gateway", "dispatcher", "client"].map(|n| User::new(&format!("{p}-{n}")));
    let [no_results, no_log, no_group, no_txn] = ["no-results", "no-log", "no-group", "no-txn"].map(|n| User::new(&format!("{p}-{n}")));
    let grants = [
        acls("worker", &worker, &p, &wg, None),
        acls("gateway", &gateway, &p, &wg, None),
        acls("dispatcher", &dispatcher, &p, &dg, None),
        acls("client", &client, &p, &wg, None),
        acls("worker", &no_results, &p, &wg, Some(&format!("WRITE TOPIC LITERAL {p}.results"))),
        acls("gateway", &no_log, &p, &wg, Some("webhooks.log")),
        acls("dispatcher", &no_group, &p, &dg, Some("GROUP LITERAL")),
        acls("worker", &no_txn, &p, &wg, Some("TRANSACTIONAL_ID")),
    ]
    .concat();
    broker.grant(&grants);

    // The admin creates the topics; nobody else may.
    let spec = TopicSpec { partitions: 3, replication: 1, retention_hours: 24, ..TopicSpec::default() };
    create_topics(&broker.kafka(&p, &broker.admin()), &spec).await.expect("topics, as the admin");
    let denied = create_topics(&broker.kafka(&p, &client), &spec).await;
    assert!(denied.is_err(), "the client's principal may not create topics");

    // 1. The deployment, least privilege each.
    let mut w = Component::spawn(&dir, "worker", &[&base_args(&["worker"], &broker, &p)[..], &["--group-id", &wg, "--worker-id", "w1", "--shutdown-grace", "5s"]].concat(), &broker.opts(&worker));
    w.wait_for_log("partitions assigned", Duration::from_secs(90));
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Component::spawn(&dir, "gateway", &[&base_args(&["gateway"], &broker, &p)[..], &["--listen", &listen, "--insecure-no-auth"]].concat(), &broker.opts(&gateway));
    gw.wait_for_log("gateway listening", Duration::from_secs(90));
    let mut wh = Component::spawn(
        &dir,
        "dispatcher",
        &[&base_args(&["webhooks", "run"], &broker, &p)[..], &["--group-id", &dg, "--listen", "127.0.0.1:0", "--allow-loopback", "--insecure-no-auth"]].concat(),
        &broker.opts(&dispatcher),
    );
    wh.wait_for_log("webhook dispatcher starting", Duration::from_secs(90));

    let courier_client = Client::new(broker.kafka(&p, &client)).expect("client");
    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(courier_client.submit(NewCommand::new("echo", json!({ "n": n }))).await.expect("submit as the client"));
    }
    let t = common::TestTopics { kafka: broker.kafka(&p, &client), topics: courier::topics::Topics::new(&p), partitions: 3 };
    let seen = tokio::task::spawn_blocking(move || common::collect_results(&t, Duration::from_secs(120), |s| common::count_distinct_finals(s) >= 200)).await.expect("results");
    let finals = common::finals_by_command(&seen);
    assert!(ids.iter().all(|id| finals.get(id).is_some_and(|f| f.iter().all(|s| s.event.state() == State::Completed))), "every client command completed");
    assert_eq!(finals.len(), 200, "nothing but the client's commands");

    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    let mut names = Vec::new();
    for n in 0..20 {
        let r = http.post(format!("{base}/v1/commands")).json(&json!({ "type": "echo", "payload": { "via": "gateway", "n": n } })).send().await.expect("post");
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED, "{}", r.text().await.unwrap_or_default());
        names.push(r.json::<Value>().await.expect("operation")["name"].as_str().expect("name").to_string());
    }
    for name in &names {
        let op = wait_done(&http, &base, name).await;
        assert!(op.get("response").is_some(), "{name} completed: {op}");
    }

    let (hook, calls) = receiver().await;
    let id = courier_client.submit(NewCommand::new("echo", json!({ "hook": true })).callback_url(hook.clone())).await.expect("submit with a callback");
    let until = Instant::now() + Duration::from_secs(60);
    while calls.lock().unwrap().is_empty() {
        assert!(Instant::now() < until, "no webhook delivered: {}", wh.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls.lock().unwrap().iter().any(|c| c.to_string().contains(&id.to_string())), "the webhook is the command's");

    // 2. Missing grants and bad credentials end the start, naming what to grant.
    let worker_args = [&base_args(&["worker"], &broker, &p)[..], &["--group-id", &wg, "--worker-id", "w2", "--shutdown-grace", "5s"]].concat();
    let log = Component::spawn(&dir, "worker-no-results", &worker_args, &broker.opts(&no_results)).refused(Duration::from_secs(60));
    assert!(log.contains(&format!("principal WRITE on topic {p}.results")), "{log}");
    let log = Component::spawn(&dir, "worker-as-client", &worker_args, &broker.opts(&client)).refused(Duration::from_secs(60));
    // Every grant it lacks, in one message.
    for lacking in [format!("READ on topic {p}.commands"), format!("WRITE on topic {p}.commands.dlq"), format!("WRITE on topic {p}.results"), format!("READ on consumer group {wg}")] {
        assert!(log.contains(&lacking), "{lacking} in {log}");
    }
    let eos = [&worker_args[..], &["--exactly-once"]].concat();
    let log = Component::spawn(&dir, "worker-no-txn", &eos, &broker.opts(&no_txn)).refused(Duration::from_secs(90));
    assert!(log.contains(&format!("principal WRITE on transactional id courier-{wg}-w2")), "{log}");
    let gw2 = [&base_args(&["gateway"], &broker, &p)[..], &["--listen", "127.0.0.1:0", "--insecure-no-auth"]].concat();
    let log = Component::spawn(&dir, "gateway-no-log", &gw2, &broker.opts(&no_log)).refused(Duration::from_secs(60));
    assert!(log.contains(&format!("principal READ on topic {p}.webhooks.log")), "{log}");
    let wh2 = [&base_args(&["webhooks", "run"], &broker, &p)[..], &["--group-id", &dg, "--listen", "127.0.0.1:0", "--allow-loopback", "--insecure-no-auth"]].concat();
    let log = Component::spawn(&dir, "dispatcher-no-group", &wh2, &broker.opts(&no_group)).refused(Duration::from_secs(60));
    assert!(log.contains(&format!("principal READ on consumer group {dg}")), "{log}");
    let wrong = User { name: worker.name.clone(), password: "pw-wrong-password".into() };
    let started = Instant::now();
    let log = Component::spawn(&dir, "worker-wrong-password", &worker_args, &broker.opts(&wrong)).refused(Duration::from_secs(60));
    assert!(log.contains("refused this client's credentials"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused at once, not after retries: {:?}", started.elapsed());

    // The running deployment is unaffected, and no log holds a password.
    assert!(w.child.try_wait().expect("worker").is_none() && gw.child.try_wait().expect("gateway").is_none() && wh.child.try_wait().expect("dispatcher").is_none());
    let users = [&worker, &gateway, &dispatcher, &client, &no_results, &no_log, &no_group, &no_txn, &wrong];
    for entry in std::fs::read_dir(&dir).expect("logs") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        for u in users {
            assert!(!text.contains(&u.password), "a password reached a log");
        }
        assert!(!text.contains(&broker.admin_password), "the admin password reached a log");
    }
}

/// The operation once done, long-polling `?wait=30s` (more than once if need be).
async fn wait_done(http: &reqwest::Client, base: &str, name: &str) -> Value {
    for _ in 0..4 {
        let op: Value = http.get(format!("{base}/v1/{name}?wait=30s")).send().await.expect("get").json().await.expect("operation");
        if op["done"] == true {
            return op;
        }
    }
    panic!("{name} not done after two minutes");
}
