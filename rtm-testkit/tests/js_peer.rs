//! The `js_peer` example, driven the way the TypeScript SDK's Node tests drive it: JSON lines
//! to and from child processes, against a server in this process. Checks what those tests rely
//! on: replies in order, event lines with the JavaScript field names, nothing else on stdout.
//!
//! The example must be built: `cargo test` builds it with the tests, `cargo test --test js_peer`
//! alone does not (then run `cargo build --examples -p rtm-testkit` first).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use rtm_testkit::{EVENT_DEADLINE, TestServer, TestTransport, test_transport, wait_until, within};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `target/<profile>/examples/js_peer`, next to this test's `target/<profile>/deps/`.
fn peer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("js_peer{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --examples -p rtm-testkit` first",
        binary.display()
    );
    binary
}

/// A running `js_peer` process.
struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Stdout's lines, parsed (`Err` holds a line that is not JSON).
    lines: mpsc::UnboundedReceiver<Result<Value, String>>,
    /// Event lines read but not yet picked.
    events: Vec<Value>,
    next_id: u64,
}

impl Peer {
    /// Starts a peer for `user` of `server` (over the suite's transport) and waits for
    /// `{"ready": true}`.
    async fn start(server: &TestServer, user: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--server".to_owned(),
            server.addr().to_string(),
            "--cert".to_owned(),
            server.cert_path().display().to_string(),
            "--user-id".to_owned(),
            user.to_owned(),
        ];
        match test_transport() {
            TestTransport::Quic => {}
            TestTransport::WebSocket => {
                let ws = server.websocket_addr().expect("a WebSocket listener");
                args.extend(["--transport", "websocket", "--ws-addr"].map(String::from));
                args.push(ws.addr.to_string());
                if ws.tls {
                    args.push("--ws-tls".to_owned());
                }
            }
            TestTransport::WebTransport => {
                let (_, hash) = server.webtransport().expect("a WebTransport listener");
                args.extend(["--transport", "webtransport", "--cert-hash"].map(String::from));
                args.push(hash);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut child = Command::new(peer_binary())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting js_peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx
                    .send(serde_json::from_str(&line).map_err(|_| line))
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut peer = Self {
            name: user.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            events: Vec::new(),
            next_id: 0,
        };
        let ready = within(EVENT_DEADLINE, "the ready line", peer.next_line()).await;
        assert_eq!(ready, json!({"ready": true}), "{user}'s first line");
        peer
    }

    async fn next_line(&mut self) -> Value {
        match self.lines.recv().await {
            Some(Ok(value)) => value,
            Some(Err(line)) => panic!("{} printed a line that is not JSON: {line:?}", self.name),
            None => panic!("{}'s stdout closed", self.name),
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("writing to js_peer");
    }

    /// The reply with `id`, keeping the events that come before it.
    async fn reply(&mut self, id: Value) -> Value {
        let what = format!("the reply to command {id} of {}", self.name);
        within(EVENT_DEADLINE, &what, async {
            loop {
                let line = self.next_line().await;
                if line.get("event").is_some() {
                    self.events.push(line);
                    continue;
                }
                assert_eq!(
                    line["id"], id,
                    "{}: replies come in order: {line}",
                    self.name
                );
                return line;
            }
        })
        .await
    }

    /// Sends `command` with a fresh id and returns the reply.
    async fn call(&mut self, mut command: Value) -> Value {
        self.next_id += 1;
        command["id"] = json!(self.next_id);
        self.send_line(&command.to_string());
        self.reply(json!(self.next_id)).await
    }

    /// Like [`Peer::call`], checking that the command succeeded.
    async fn ok(&mut self, command: Value) -> Value {
        let reply = self.call(command.clone()).await;
        assert_eq!(
            reply["ok"], true,
            "{}: {command} failed: {reply}",
            self.name
        );
        reply
    }

    /// The first event line that `pick` accepts (among those kept, then new ones).
    async fn event(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.events.iter().position(&pick) {
            return self.events.remove(i);
        }
        let what = format!("{what} at {}", self.name);
        within(EVENT_DEADLINE, &what, async {
            loop {
                let line = self.next_line().await;
                assert!(
                    line.get("event").is_some(),
                    "a reply with no command: {line}"
                );
                if pick(&line) {
                    return line;
                }
                self.events.push(line);
            }
        })
        .await
    }

    /// Closes stdin and waits for the process to exit by itself.
    async fn exit_status(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let mut status = None;
        wait_until(EVENT_DEADLINE, "js_peer to exit", || {
            status = self.child.try_wait().expect("polling js_peer");
            status.is_some()
        })
        .await;
        status.expect("exited")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(kind: &'static str, event_type: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == kind && (event_type.is_empty() || e["eventType"] == event_type)
}

#[tokio::test]
async fn messages_presence_and_metadata_cross_between_peers() {
    let server = TestServer::start().await;
    let mut alice = Peer::start(&server, "alice", &[]).await;
    let mut bob = Peer::start(&server, "bob", &[]).await;
    for peer in [&mut alice, &mut bob] {
        let login = peer.ok(json!({"op": "login"})).await;
        assert!(login["timestamp"].as_u64().unwrap() > 0);
    }
    let connected = bob
        .event("CONNECTED", |e| {
            e["event"] == "linkState" && e["currentState"] == "CONNECTED"
        })
        .await;
    assert_eq!(connected["previousState"], "CONNECTING");
    assert_eq!(connected["reasonCode"], "LOGIN_SUCCESS");
    assert_eq!(connected["isResumed"], false);
    let sub = json!({"op": "subscribe", "channel": "room", "withMetadata": true});
    assert_eq!(bob.ok(sub).await["channelName"], "room");
    alice
        .ok(json!({"op": "subscribe", "channel": "room"}))
        .await;
    let joined = bob
        .event("alice's arrival", is("presence", "REMOTE_JOIN"))
        .await;
    assert_eq!(joined["publisher"], "alice");
    assert_eq!(joined["channelType"], "MESSAGE");

    let publish = json!({"op": "publish", "channel": "room", "message": "hello bob",
                         "customType": "greeting"});
    let sent = alice.ok(publish).await;
    let m = bob.event("alice's message", is("message", "")).await;
    assert_eq!(m["channelType"], "MESSAGE");
    assert_eq!(m["channelName"], "room");
    assert_eq!(m["topicName"], "");
    assert_eq!(m["messageType"], "STRING");
    assert_eq!(m["customType"], "greeting");
    assert_eq!(m["publisher"], "alice");
    assert_eq!(m["message"], "hello bob");
    assert_eq!(m["timestamp"], sent["timestamp"]);

    bob.ok(json!({"op": "publish", "channel": "room", "messageBase64": "AAEC/w=="}))
        .await;
    let m = alice
        .event("bob's bytes", |e| {
            e["event"] == "message" && e["publisher"] == "bob"
        })
        .await;
    assert_eq!(m["messageType"], "BINARY");
    assert_eq!(m["message"], json!({"base64": "AAEC/w=="}));

    let direct = json!({"op": "publish", "channel": "bob", "channelType": "USER",
                        "message": "just for you"});
    alice.ok(direct).await;
    let m = bob
        .event("a user-channel message", |e| {
            e["event"] == "message" && e["channelType"] == "USER"
        })
        .await;
    assert_eq!(
        (&m["channelName"], &m["publisher"]),
        (&json!("alice"), &json!("alice"))
    );
    assert_eq!(m["message"], "just for you");

    let state = json!({"op": "setState", "channel": "room", "channelType": "MESSAGE",
                       "states": {"mood": "happy"}});
    alice.ok(state).await;
    let changed = bob
        .event("alice's state", is("presence", "REMOTE_STATE_CHANGED"))
        .await;
    assert_eq!(changed["stateChanged"], json!({"mood": "happy"}));
    let who = json!({"op": "whoNow", "channel": "room", "channelType": "MESSAGE",
                     "includeState": true});
    let who = bob.ok(who).await;
    assert_eq!(who["totalOccupancy"], 2);
    let alice_there = who["occupants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["userId"] == "alice");
    assert_eq!(alice_there.unwrap()["states"], json!({"mood": "happy"}));

    let set = json!({"op": "setChannelMetadata", "channel": "room", "channelType": "MESSAGE",
                     "items": [{"key": "topic", "value": "rust"}], "addUserId": true});
    alice.ok(set).await;
    let update = bob
        .event("the metadata update", is("storage", "UPDATE"))
        .await;
    assert_eq!(update["storageType"], "CHANNEL");
    assert_eq!(update["channelName"], "room");
    let item = &update["data"]["metadata"]["topic"];
    assert_eq!(
        (&item["value"], &item["authorUid"]),
        (&json!("rust"), &json!("alice"))
    );
    let got = json!({"op": "getChannelMetadata", "channel": "room", "channelType": "MESSAGE"});
    let got = bob.ok(got).await;
    assert_eq!(got["metadata"]["topic"]["value"], "rust");
    assert_eq!(got["totalCount"], 1);

    bob.ok(json!({"op": "subscribeUserMetadata", "userId": "alice"}))
        .await;
    let items = json!([{"key": "city", "value": "Paris"}]);
    alice
        .ok(json!({"op": "setUserMetadata", "items": items}))
        .await;
    let update = bob
        .event("alice's user metadata", |e| {
            is("storage", "UPDATE")(e) && e["storageType"] == "USER"
        })
        .await;
    assert_eq!(update["channelName"], "alice");
    assert_eq!(update["data"]["metadata"]["city"]["value"], "Paris");

    let bye = alice.ok(json!({"op": "exit"})).await;
    assert_eq!(bye, json!({"id": alice.next_id, "ok": true}));
    assert!(alice.exit_status().await.success());
    let left = bob
        .event("alice's departure", is("presence", "REMOTE_LEAVE"))
        .await;
    assert_eq!(left["publisher"], "alice");
}

#[tokio::test]
async fn topic_messages_reach_a_subscriber() {
    let server = TestServer::start().await;
    let mut alice = Peer::start(&server, "alice", &[]).await;
    let mut bob = Peer::start(&server, "bob", &[]).await;
    for peer in [&mut alice, &mut bob] {
        peer.ok(json!({"op": "login"})).await;
        peer.ok(json!({"op": "joinStream", "channel": "stage"}))
            .await;
    }
    alice
        .ok(json!({"op": "joinTopic", "channel": "stage", "topic": "moves"}))
        .await;
    let joined = bob
        .event("alice in the topic", is("topic", "REMOTE_JOIN"))
        .await;
    let info = &joined["topicInfos"][0];
    assert_eq!(info["topicName"], "moves");
    assert_eq!(info["publishers"][0]["publisherUserId"], "alice");
    let sub = json!({"op": "subscribeTopic", "channel": "stage", "topic": "moves",
                     "users": ["alice"]});
    assert_eq!(bob.ok(sub).await["succeedUsers"], json!(["alice"]));
    let publish = json!({"op": "publishTopic", "channel": "stage", "topic": "moves",
                         "messageBase64": "AQID"});
    alice.ok(publish).await;
    let m = bob.event("the topic message", is("message", "")).await;
    assert_eq!(m["channelType"], "STREAM");
    assert_eq!(
        (&m["channelName"], &m["topicName"]),
        (&json!("stage"), &json!("moves"))
    );
    assert_eq!(m["message"], json!({"base64": "AQID"}));
    bob.ok(json!({"op": "leaveStream", "channel": "stage"}))
        .await;
}

#[tokio::test]
async fn encrypted_messages_between_peers_with_the_same_key() {
    let server = TestServer::start().await;
    let key = [
        "--encryption-mode",
        "aes256gcm",
        "--cipher-key",
        "0123456789abcdef0123456789abcdef",
        "--salt-hex",
        "000102030405060708090a0b0c0d0e0f",
    ];
    let mut alice = Peer::start(&server, "alice", &key).await;
    let mut bob = Peer::start(&server, "bob", &key).await;
    let mut carol = Peer::start(&server, "carol", &[]).await;
    for peer in [&mut alice, &mut bob, &mut carol] {
        peer.ok(json!({"op": "login"})).await;
    }
    for peer in [&mut bob, &mut carol] {
        peer.ok(json!({"op": "subscribe", "channel": "vault"}))
            .await;
    }
    alice
        .ok(json!({"op": "publish", "channel": "vault", "message": "sealed"}))
        .await;
    let m = bob.event("the sealed message", is("message", "")).await;
    assert_eq!(
        (&m["messageType"], &m["message"]),
        (&json!("STRING"), &json!("sealed"))
    );
    let m = carol.event("the sealed message", is("message", "")).await;
    let ciphertext = m["message"]["encrypted"]
        .as_str()
        .expect("carol has no key");
    assert!(!ciphertext.is_empty());

    let direct = json!({"op": "publish", "channel": "alice", "channelType": "USER",
                        "messageBase64": "3q2+7w=="});
    bob.ok(direct).await;
    let m = alice.event("bob's sealed bytes", is("message", "")).await;
    assert_eq!(m["channelType"], "USER");
    assert_eq!(m["message"], json!({"base64": "3q2+7w=="}));
}

#[tokio::test]
async fn bad_lines_get_errors_and_the_end_of_stdin_exits() {
    let server = TestServer::start().await;
    let mut peer = Peer::start(&server, "dora", &[]).await;
    for line in ["this is not json", "[1, 2]", "{\"id\": 3"] {
        peer.send_line(line);
        let reply = peer.reply(Value::Null).await;
        assert_eq!(
            (&reply["ok"], &reply["code"]),
            (&json!(false), &json!(-10014)),
            "{line}"
        );
    }
    peer.send_line("");
    peer.send_line(r#"{"id": "x", "op": "teleport"}"#);
    let reply = peer.reply(json!("x")).await;
    assert_eq!(reply["code"], -10014);
    assert!(
        reply["reason"].as_str().unwrap().contains("teleport"),
        "{reply}"
    );
    for bad in [
        json!({"op": "publish", "channel": "room"}),
        json!({"op": "publish", "channel": "room", "messageBase64": "not base64!"}),
        json!({"op": "subscribe", "channel": "room", "withPresence": "yes"}),
        json!({"op": "setState", "channel": "room", "states": {"n": 1}}),
        json!({"op": "publish", "channel": "room", "message": "x", "channelType": "RADIO"}),
    ] {
        assert_eq!(peer.call(bad.clone()).await["code"], -10014, "{bad}");
    }
    let early = peer
        .call(json!({"op": "publish", "channel": "room", "message": "x"}))
        .await;
    assert_eq!(early["code"], -10002, "NOT_LOGIN before login: {early}");
    peer.ok(json!({"op": "login"})).await;
    assert!(peer.exit_status().await.success());
}

#[test]
fn bad_flags_exit_with_status_2_and_an_empty_stdout() {
    let out = Command::new(peer_binary())
        .args(["--user-id", "x", "--transport", "carrier-pigeon"])
        .stdin(Stdio::null())
        .output()
        .expect("running js_peer");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrier-pigeon"));
}
