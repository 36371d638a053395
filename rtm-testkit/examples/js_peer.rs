//! `js_peer`: an rtm client that another program drives over JSON lines, so that tests written
//! in another language (the TypeScript SDK's Node tests in `clients/js`) can prove that their
//! client and this one interoperate.
//!
//! ```sh
//! cargo build --examples -p rtm-testkit
//! target/debug/examples/js_peer --server 127.0.0.1:4433 --cert rtm-data/cert.pem --user-id bob
//! ```
//!
//! # Flags
//!
//! `--server HOST:PORT` (the server's UDP address, default `127.0.0.1:4433`), `--cert PATH` (the
//! PEM certificate to pin: `cert.pem` in the server's data dir, default `rtm-data/cert.pem`),
//! `--server-name NAME` (default `localhost`), `--transport quic|websocket|webtransport`
//! (default `quic`), `--ws-addr HOST:PORT` and `--ws-tls` (WebSocket), `--cert-hash HEX` (the
//! short-lived WebTransport certificate's SHA-256, as the server prints it; repeatable),
//! `--app-id` (default `testapp`), `--user-id` (required), `--encryption-mode
//! none|aes128gcm|aes256gcm`, `--cipher-key`, `--salt-hex`, `--presence-timeout SECS`.
//! Logs go to stderr, and only when `RUST_LOG` is set.
//!
//! # Lines
//!
//! Stdout carries nothing but JSON objects, one a line, flushed one by one:
//!
//! - `{"ready": true}` once the client exists (`{"ready": false, "code", "reason"}` and exit 1
//!   when the configuration is refused).
//! - One reply per command, in the commands' order: `{"id": <the command's id>, "ok": true,
//!   ...result}` or `{"id", "ok": false, "code": <rtm error code>, "operation", "reason"}`.
//! - One line per event, as the JavaScript SDK names its fields: `{"event": "message" |
//!   "presence" | "topic" | "storage" | "lock" | "linkState" | "tokenPrivilegeWillExpire" |
//!   "messagesLost" | "error", ...}`. Enum values are the reference's strings (`"MESSAGE"`,
//!   `"REMOTE_JOIN"`, ...). A message is a string for text, `{"base64": ".."}` for binary, and
//!   `{"encrypted": ".."}` for a payload this client could not decrypt. An event a command
//!   causes may come before or after that command's reply.
//!
//! Stdin carries commands, one JSON object a line, each with an `"id"` (echoed) and an `"op"`.
//! They run one at a time, in order; events are printed while one waits. A line that is not a
//! JSON object gets `{"id": null, "ok": false, "code": -10014, ...}`; a bad field gets -10014
//! with the command's id. The end of stdin logs out and exits 0, as does `{"op": "exit"}`.
//!
//! A session (`>` is stdin, `<` stdout; a line's keys come in alphabetical order; lines are cut
//! here at `...`):
//!
//! ```text
//! < {"ready":true}
//! > {"id": 1, "op": "login"}
//! < {"affectedChannels":[],"currentState":"CONNECTING","event":"linkState",...}
//! < {"id":1,"ok":true,"timestamp":1796163081332}
//! < {"affectedChannels":[],"currentState":"CONNECTED","event":"linkState",...}
//! > {"id": 2, "op": "subscribe", "channel": "room", "withMetadata": true}
//! < {"channelName":"room","id":2,"ok":true,"timestamp":1796163081832}
//! < {"channelName":"room","channelType":"MESSAGE","event":"presence","eventType":"SNAPSHOT",
//!    "interval":null,"publisher":"","snapshot":[{"states":{},"statesCount":0,
//!    "userId":"alice"}],...}
//! < {"channelName":"room","channelType":"MESSAGE","data":{"majorRevision":0,"metadata":{},
//!    "totalCount":0},"event":"storage","eventType":"SNAPSHOT",...,"storageType":"CHANNEL",...}
//! > {"id": 3, "op": "publish", "channel": "room", "messageBase64": "AAEC"}
//! < {"channelName":"room","id":3,"ok":true,"timestamp":1796163082334}
//! < {"channelName":"room","channelType":"MESSAGE","customType":"","event":"message",
//!    "message":{"base64":"AAEC"},"messageType":"BINARY","publisher":"alice",
//!    "timestamp":1796163082334,"topicName":""}
//! > {"id": 4, "op": "whoNow", "channel": "room"}
//! < {"id":4,"nextPage":"","occupants":[{"states":{},"statesCount":0,"userId":"alice"}],"ok":true,
//!    "timestamp":1796163082338,"totalOccupancy":1}
//! > {"id": 5, "op": "exit"}
//! < {"id":5,"ok":true}
//! ```
//!
//! The ops and their fields (`?`: optional; `channelType` is `"MESSAGE"` (the default),
//! `"STREAM"` or `"USER"`; `items` is `[{key, value, revision?}]`):
//!
//! ```text
//! {"id": 1, "op": "login", "token": "..."}                     token?
//! {"id": 2, "op": "logout"}
//! {"id": 3, "op": "subscribe", "channel": "room", "withPresence": true}
//!                         withMessage?, withPresence?, beQuiet?, withMetadata?, withLock?
//! {"id": 4, "op": "unsubscribe", "channel": "room"}
//! {"id": 5, "op": "publish", "channel": "bob", "channelType": "USER", "message": "hi"}
//!                         message | messageBase64, channelType?, customType?, storeInHistory?
//! {"id": 6, "op": "setState", "channel": "room", "states": {"mic": "on"}}    channelType?
//!                         (and removeState, with "keys": ["mic"]; no keys: all of them)
//! {"id": 7, "op": "whoNow", "channel": "room", "includeState": true}
//! {"id": 8, "op": "setChannelMetadata", "channel": "room", "items": [{"key": "k", "value": "v"}]}
//!                         channelType?, majorRevision?, lockName?, addTimestamp?, addUserId?
//! {"id": 9, "op": "getChannelMetadata", "channel": "room", "channelType": "MESSAGE"}
//! {"id": 10, "op": "setUserMetadata", "items": [{"key": "city", "value": "Paris"}]}   userId?, ...
//! {"id": 11, "op": "getUserMetadata", "userId": "alice"}       userId?
//! {"id": 12, "op": "subscribeUserMetadata", "userId": "alice"}   (and unsubscribeUserMetadata)
//! {"id": 13, "op": "setLock", "channel": "room", "lockName": "floor", "ttl": 30}
//! {"id": 14, "op": "acquireLock", "channel": "room", "lockName": "floor", "retry": false}
//! {"id": 15, "op": "releaseLock", "channel": "room", "lockName": "floor"}   (and removeLock)
//! {"id": 16, "op": "getLocks", "channel": "room"}
//! {"id": 17, "op": "joinStream", "channel": "stage", "withPresence": true}
//!                         token?, withPresence?, beQuiet?, withMetadata?, withLock?
//! {"id": 18, "op": "joinTopic", "channel": "stage", "topic": "moves"}       (and leaveTopic)
//! {"id": 19, "op": "subscribeTopic", "channel": "stage", "topic": "moves", "users": ["alice"]}
//! {"id": 20, "op": "publishTopic", "channel": "stage", "topic": "moves", "messageBase64": "AQI="}
//!                         message | messageBase64, customType?
//! {"id": 21, "op": "leaveStream", "channel": "stage"}
//! {"id": 22, "op": "exit"}
//! ```
#![warn(missing_docs)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rtm_client::{
    AcquireLockOptions, ChannelType, EncryptionMode, Endpoint, ErrorCode, GetUserMetadataOptions,
    JoinOptions, JoinTopicOptions, LoginOptions, MetadataItem, MetadataOptions, Payload,
    PublishOptions, RemoveStateOptions, RtmClient, RtmConfig, RtmError, RtmEvent, SetLockOptions,
    SetOrUpdateUserMetadataOptions, StateDetail, StorageData, StoredItem, SubscribeOptions,
    TopicMessageOptions, TopicSubscribeOptions, Transport, Trust, UserState, WhoNowOptions,
};
use serde_json::{Map, Value, json};

/// A command's fields.
type Cmd = Map<String, Value>;

/// Writes one line to stdout and flushes it.
fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    // A reader that went away also closes stdin, which ends the process.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("js_peer: {e}\n(see the doc comment of rtm-testkit/examples/js_peer.rs)");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(args));
}

/// The App ID, the user id and the configuration the flags give.
fn parse_args() -> Result<(String, String, RtmConfig), String> {
    let mut server: SocketAddr = ([127, 0, 0, 1], 4433).into();
    let (mut server_name, mut cert) = ("localhost".to_owned(), PathBuf::from("rtm-data/cert.pem"));
    let (mut transport, mut ws_addr, mut ws_tls) = ("quic".to_owned(), None, false);
    let (mut app_id, mut user_id) = (rtm_testkit::TEST_APP_ID.to_owned(), None);
    let (mut mode, mut cipher_key, mut salt) = (EncryptionMode::None, String::new(), Vec::new());
    let (mut hashes, mut presence_timeout) = (Vec::new(), None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--ws-tls" {
            ws_tls = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--server" => server = value.parse().map_err(|e| bad(&e))?,
            "--server-name" => server_name = value,
            "--cert" => cert = value.into(),
            "--cert-hash" => {
                let hash = hex(&value)?.try_into().map_err(|_| bad(&"not 32 bytes"))?;
                hashes.push(hash);
            }
            "--transport" => transport = value,
            "--ws-addr" => ws_addr = Some(value.parse().map_err(|e| bad(&e))?),
            "--app-id" => app_id = value,
            "--user-id" => user_id = Some(value),
            "--encryption-mode" => {
                mode = match value.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
                    "none" => EncryptionMode::None,
                    "aes128gcm" => EncryptionMode::Aes128Gcm,
                    "aes256gcm" => EncryptionMode::Aes256Gcm,
                    _ => return Err(bad(&"expected none, aes128gcm or aes256gcm")),
                }
            }
            "--cipher-key" => cipher_key = value,
            "--salt-hex" => salt = hex(&value)?,
            "--presence-timeout" => presence_timeout = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let trust = if transport == "webtransport" && !hashes.is_empty() {
        Trust::CertificateHashes(hashes)
    } else {
        Trust::PinnedCertFile(cert)
    };
    let mut config = RtmConfig::new(Endpoint {
        addr: server,
        server_name,
        trust,
    });
    config.transport = match transport.as_str() {
        "quic" => Transport::Quic,
        "webtransport" => Transport::WebTransport,
        "websocket" => Transport::WebSocket {
            addr: ws_addr.ok_or("--transport websocket needs --ws-addr")?,
            tls: ws_tls,
        },
        other => {
            return Err(format!(
                "--transport {other}: expected quic, websocket or webtransport"
            ));
        }
    };
    config.encryption_mode = mode;
    config.cipher_key = cipher_key;
    config.salt = salt;
    if let Some(seconds) = presence_timeout {
        config.presence_timeout = seconds;
    }
    Ok((app_id, user_id.ok_or("--user-id is required")?, config))
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{text:?} is not an even number of hex digits"))
}

async fn run((app_id, user_id, config): (String, String, RtmConfig)) {
    let client = match RtmClient::new(&app_id, &user_id, config) {
        Ok(client) => client,
        Err(e) => {
            emit(&json!({"ready": false, "code": e.code.code(), "reason": e.reason}));
            std::process::exit(1);
        }
    };
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            emit(&event_line(event));
        }
    });
    // Stdin is read by a thread of its own, so that events keep flowing while it blocks.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if tx.send(line).is_err() => break,
                Ok(_) => {}
            }
        }
    });
    emit(&json!({"ready": true}));
    while let Some(line) = lines.recv().await {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, reply) = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(cmd)) => {
                let id = cmd.get("id").cloned().unwrap_or(Value::Null);
                let reply = match cmd.get("op").and_then(Value::as_str) {
                    Some("exit") => {
                        let _ = client.logout().await;
                        emit(&reply_line(id, Ok(json!({}))));
                        std::process::exit(0);
                    }
                    Some(op) => command(&client, op, &cmd).await,
                    None => Err(invalid("a command needs an \"op\" string")),
                };
                (id, reply)
            }
            Ok(_) => (Value::Null, Err(invalid("a command is a JSON object"))),
            Err(e) => (Value::Null, Err(invalid(format!("not JSON: {e}")))),
        };
        emit(&reply_line(id, reply));
    }
    // The end of stdin.
    let _ = client.logout().await;
    std::process::exit(0);
}

fn reply_line(id: Value, reply: Result<Value, RtmError>) -> Value {
    let mut line = match reply {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => Map::new(),
        Err(e) => {
            return json!({"id": id, "ok": false, "code": e.code.code(),
                          "operation": e.operation, "reason": e.reason});
        }
    };
    line.insert("ok".into(), true.into());
    line.insert("id".into(), id);
    Value::Object(line)
}

/// Runs one command and returns its result fields.
async fn command(client: &RtmClient, op: &str, cmd: &Cmd) -> Result<Value, RtmError> {
    let channel = || text(cmd, "channel");
    let stream = || client.create_stream_channel(&text(cmd, "channel")?);
    let at = |r: u64| json!({"timestamp": r});
    Ok(match op {
        "login" => at(client
            .login(LoginOptions {
                token: opt_text(cmd, "token")?,
            })
            .await?
            .timestamp),
        "logout" => at(client.logout().await?.timestamp),
        "subscribe" => {
            let d = SubscribeOptions::default();
            let options = SubscribeOptions {
                with_message: flag(cmd, "withMessage", d.with_message)?,
                with_presence: flag(cmd, "withPresence", d.with_presence)?,
                be_quiet: flag(cmd, "beQuiet", d.be_quiet)?,
                with_metadata: flag(cmd, "withMetadata", d.with_metadata)?,
                with_lock: flag(cmd, "withLock", d.with_lock)?,
            };
            let r = client.subscribe(&channel()?, options).await?;
            json!({"channelName": r.channel_name, "timestamp": r.timestamp})
        }
        "unsubscribe" => {
            let r = client.unsubscribe(&channel()?).await?;
            json!({"channelName": r.channel_name, "timestamp": r.timestamp})
        }
        "publish" => {
            let options = PublishOptions {
                custom_type: opt_text(cmd, "customType")?,
                channel_type: channel_type(cmd)?,
                store_in_history: flag(cmd, "storeInHistory", false)?,
            };
            let r = client.publish(&channel()?, payload(cmd)?, options).await?;
            json!({"channelName": r.channel_name, "timestamp": r.timestamp})
        }
        "setState" => {
            let states: StateDetail = serde_json::from_value(field(cmd, "states")?.clone())
                .map_err(|e| invalid(format!("\"states\": {e}")))?;
            let presence = client.presence();
            at(presence
                .set_state(&channel()?, channel_type(cmd)?, states)
                .await?
                .timestamp)
        }
        "removeState" => {
            let options = RemoveStateOptions {
                states: strings(cmd, "keys")?,
            };
            let presence = client.presence();
            at(presence
                .remove_state(&channel()?, channel_type(cmd)?, options)
                .await?
                .timestamp)
        }
        "whoNow" => {
            let options = WhoNowOptions {
                include_state: flag(cmd, "includeState", false)?,
                ..Default::default()
            };
            let r = client
                .presence()
                .who_now(&channel()?, channel_type(cmd)?, options)
                .await?;
            let occupants: Vec<Value> = r
                .occupants
                .iter()
                .map(|o| {
                    json!({"userId": o.user_id, "states": o.states, "statesCount": o.states_count})
                })
                .collect();
            json!({"totalOccupancy": r.total_occupancy, "occupants": occupants,
                   "nextPage": r.next_page, "timestamp": r.timestamp})
        }
        "setChannelMetadata" => {
            let (name, kind) = (channel()?, channel_type(cmd)?);
            let (data, options) = (items(cmd)?, metadata_options(cmd)?);
            let storage = client.storage();
            let r = storage
                .set_channel_metadata(&name, kind, data, options)
                .await?;
            json!({"channelName": r.channel_name, "channelType": r.channel_type.to_string(),
                   "totalCount": r.total_count, "majorRevision": r.major_revision,
                   "timestamp": r.timestamp})
        }
        "getChannelMetadata" => {
            let r = client
                .storage()
                .get_channel_metadata(&channel()?, channel_type(cmd)?)
                .await?;
            json!({"channelName": r.channel_name, "channelType": r.channel_type.to_string(),
                   "totalCount": r.total_count, "majorRevision": r.major_revision,
                   "metadata": metadata(&r.metadata), "timestamp": r.timestamp})
        }
        "setUserMetadata" => {
            let options = SetOrUpdateUserMetadataOptions {
                user_id: opt_text(cmd, "userId")?,
                options: metadata_options(cmd)?,
            };
            let r = client
                .storage()
                .set_user_metadata(items(cmd)?, options)
                .await?;
            json!({"userId": r.user_id, "totalCount": r.total_count,
                   "majorRevision": r.major_revision, "timestamp": r.timestamp})
        }
        "getUserMetadata" => {
            let options = GetUserMetadataOptions {
                user_id: opt_text(cmd, "userId")?,
            };
            let r = client.storage().get_user_metadata(options).await?;
            json!({"userId": r.user_id, "totalCount": r.total_count,
                   "majorRevision": r.major_revision, "metadata": metadata(&r.metadata),
                   "timestamp": r.timestamp})
        }
        "subscribeUserMetadata" | "unsubscribeUserMetadata" => {
            let (storage, user) = (client.storage(), text(cmd, "userId")?);
            let r = if op == "subscribeUserMetadata" {
                storage.subscribe_user_metadata(&user).await?
            } else {
                storage.unsubscribe_user_metadata(&user).await?
            };
            json!({"userId": r.user_id, "timestamp": r.timestamp})
        }
        "setLock" | "acquireLock" | "releaseLock" | "removeLock" => {
            let (lock, name, kind) = (client.lock(), channel()?, channel_type(cmd)?);
            let lock_name = text(cmd, "lockName")?;
            let r = match op {
                "setLock" => {
                    let ttl = int(cmd, "ttl")?.map(|t| t.clamp(0, u32::MAX.into()) as u32);
                    lock.set_lock(&name, kind, &lock_name, SetLockOptions { ttl })
                        .await?
                }
                "acquireLock" => {
                    let retry = flag(cmd, "retry", false)?;
                    let options = AcquireLockOptions { retry };
                    lock.acquire_lock(&name, kind, &lock_name, options).await?
                }
                "releaseLock" => lock.release_lock(&name, kind, &lock_name).await?,
                _ => lock.remove_lock(&name, kind, &lock_name).await?,
            };
            json!({"channelName": r.channel_name, "channelType": r.channel_type.to_string(),
                   "lockName": r.lock_name, "timestamp": r.timestamp})
        }
        "getLocks" => {
            let r = client
                .lock()
                .get_locks(&channel()?, channel_type(cmd)?)
                .await?;
            let details: Vec<Value> = r.lock_details.iter().map(lock_detail).collect();
            json!({"channelName": r.channel_name, "channelType": r.channel_type.to_string(),
                   "totalLocks": r.total_locks, "lockDetails": details, "timestamp": r.timestamp})
        }
        "joinStream" => {
            let d = JoinOptions::default();
            let options = JoinOptions {
                token: opt_text(cmd, "token")?,
                with_presence: flag(cmd, "withPresence", d.with_presence)?,
                be_quiet: flag(cmd, "beQuiet", d.be_quiet)?,
                with_metadata: flag(cmd, "withMetadata", d.with_metadata)?,
                with_lock: flag(cmd, "withLock", d.with_lock)?,
            };
            let r = stream()?.join(options).await?;
            json!({"channelName": r.channel_name, "timestamp": r.timestamp})
        }
        "leaveStream" => {
            let r = stream()?.leave().await?;
            json!({"channelName": r.channel_name, "timestamp": r.timestamp})
        }
        "joinTopic" | "leaveTopic" | "publishTopic" => {
            let (stream, topic) = (stream()?, text(cmd, "topic")?);
            let r = match op {
                "joinTopic" => {
                    stream
                        .join_topic(&topic, JoinTopicOptions::default())
                        .await?
                }
                "leaveTopic" => stream.leave_topic(&topic).await?,
                _ => {
                    let options = TopicMessageOptions {
                        custom_type: opt_text(cmd, "customType")?,
                    };
                    stream
                        .publish_topic_message(&topic, payload(cmd)?, options)
                        .await?
                }
            };
            json!({"topicName": r.topic_name, "timestamp": r.timestamp})
        }
        "subscribeTopic" => {
            let options = TopicSubscribeOptions {
                users: strings(cmd, "users")?,
            };
            let r = stream()?
                .subscribe_topic(&text(cmd, "topic")?, options)
                .await?;
            let failed: Vec<Value> = r
                .failed_details
                .iter()
                .map(|f| json!({"user": f.user, "errorCode": f.error_code, "reason": f.reason}))
                .collect();
            json!({"topicName": r.topic_name, "succeedUsers": r.succeed_users,
                   "failedUsers": r.failed_users, "failedDetails": failed,
                   "timestamp": r.timestamp})
        }
        other => return Err(invalid(format!("unknown op {other:?}"))),
    })
}

fn invalid(reason: impl Into<String>) -> RtmError {
    RtmError::new(ErrorCode::InvalidParameter, "js_peer", reason)
}

fn field<'a>(cmd: &'a Cmd, key: &str) -> Result<&'a Value, RtmError> {
    match cmd.get(key) {
        None | Some(Value::Null) => Err(invalid(format!("missing field {key:?}"))),
        Some(value) => Ok(value),
    }
}

fn opt_text(cmd: &Cmd, key: &str) -> Result<Option<String>, RtmError> {
    match cmd.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key:?} must be a string, not {other}"))),
    }
}

fn text(cmd: &Cmd, key: &str) -> Result<String, RtmError> {
    opt_text(cmd, key)?.ok_or_else(|| invalid(format!("missing string field {key:?}")))
}

fn flag(cmd: &Cmd, key: &str, default: bool) -> Result<bool, RtmError> {
    match cmd.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(format!("{key:?} must be a boolean, not {other}"))),
    }
}

fn int(cmd: &Cmd, key: &str) -> Result<Option<i64>, RtmError> {
    match cmd.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key:?} must be an integer, not {value}"))),
    }
}

fn strings(cmd: &Cmd, key: &str) -> Result<Vec<String>, RtmError> {
    match cmd.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| invalid(format!("{key:?} must be a list of strings: {e}"))),
    }
}

fn channel_type(cmd: &Cmd) -> Result<ChannelType, RtmError> {
    match opt_text(cmd, "channelType")?.as_deref() {
        None | Some("MESSAGE") => Ok(ChannelType::Message),
        Some("STREAM") => Ok(ChannelType::Stream),
        Some("USER") => Ok(ChannelType::User),
        Some(other) => Err(invalid(format!(
            "channelType {other:?}: MESSAGE, STREAM or USER"
        ))),
    }
}

/// `message` (text) or `messageBase64` (binary).
fn payload(cmd: &Cmd) -> Result<Payload, RtmError> {
    match (opt_text(cmd, "message")?, opt_text(cmd, "messageBase64")?) {
        (Some(text), None) => Ok(Payload::Text(text)),
        (None, Some(encoded)) => B64
            .decode(encoded)
            .map(Payload::from)
            .map_err(|e| invalid(format!("\"messageBase64\": {e}"))),
        _ => Err(invalid("give one of \"message\" and \"messageBase64\"")),
    }
}

/// `items`: `[{key, value?, revision?}]`.
fn items(cmd: &Cmd) -> Result<Vec<MetadataItem>, RtmError> {
    let Some(list) = cmd.get("items").and_then(Value::as_array) else {
        return Err(invalid(
            "\"items\" must be a list of {key, value, revision?}",
        ));
    };
    list.iter()
        .map(|item| {
            let item = item
                .as_object()
                .ok_or_else(|| invalid("an item is an object"))?;
            Ok(MetadataItem {
                key: text(item, "key")?,
                value: opt_text(item, "value")?.unwrap_or_default(),
                revision: int(item, "revision")?.unwrap_or(-1),
            })
        })
        .collect()
}

fn metadata_options(cmd: &Cmd) -> Result<MetadataOptions, RtmError> {
    Ok(MetadataOptions {
        major_revision: int(cmd, "majorRevision")?.unwrap_or(-1),
        lock_name: opt_text(cmd, "lockName")?.unwrap_or_default(),
        add_timestamp: flag(cmd, "addTimestamp", false)? || flag(cmd, "addTimeStamp", false)?,
        add_user_id: flag(cmd, "addUserId", false)?,
    })
}

/// An enum's `Debug` name (`RemoteStateChanged`) in the reference's spelling
/// (`REMOTE_STATE_CHANGED`).
fn screaming(value: impl std::fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{value:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn message_json(payload: &Payload) -> Value {
    match payload {
        Payload::Text(text) => json!(text),
        Payload::Binary(bytes) => json!({"base64": B64.encode(bytes)}),
        Payload::Encrypted(bytes) => json!({"encrypted": B64.encode(bytes)}),
    }
}

fn user_state(u: &UserState) -> Value {
    json!({"userId": u.user_id, "states": u.states, "statesCount": u.states.len()})
}

fn users(list: &[String]) -> Value {
    json!({"users": list, "userCount": list.len()})
}

/// `{key: {value, revision, updated, authorUid}}`.
fn metadata(items: &[StoredItem]) -> Value {
    let map: Map<String, Value> = items
        .iter()
        .map(|i| {
            let detail = json!({"value": i.value, "revision": i.revision, "updated": i.updated,
                                "authorUid": i.author_user_id});
            (i.key.clone(), detail)
        })
        .collect();
    Value::Object(map)
}

fn storage_data(data: &StorageData) -> Value {
    json!({"totalCount": data.items.len(), "majorRevision": data.major_revision,
           "metadata": metadata(&data.items)})
}

fn lock_detail(d: &rtm_client::LockDetail) -> Value {
    json!({"lockName": d.lock_name, "owner": d.owner, "ttl": d.ttl})
}

/// An event as the JavaScript SDK names its fields, with `"event"` its listener type.
fn event_line(event: RtmEvent) -> Value {
    match event {
        RtmEvent::Message(m) => json!({"event": "message",
            "channelType": m.channel_type.to_string(), "channelName": m.channel_name,
            "topicName": m.topic_name, "messageType": m.message.message_type(),
            "customType": m.custom_type, "publisher": m.publisher,
            "message": message_json(&m.message), "timestamp": m.timestamp}),
        RtmEvent::Presence(p) => json!({"event": "presence",
            "eventType": screaming(p.event_type), "channelType": p.channel_type.to_string(),
            "channelName": p.channel_name, "publisher": p.publisher,
            "stateChanged": p.state_changed,
            "interval": p.interval.map(|i| json!({"join": users(&i.join),
                "leave": users(&i.leave), "timeout": users(&i.timeout),
                "userStateList": i.user_state_list.iter().map(user_state).collect::<Vec<_>>()})),
            "snapshot": p.snapshot.iter().map(user_state).collect::<Vec<_>>(),
            "timestamp": p.timestamp}),
        RtmEvent::Topic(t) => {
            let infos: Vec<Value> = t
                .topic_infos
                .iter()
                .map(|info| {
                    let publishers: Vec<Value> = info
                        .publishers
                        .iter()
                        .map(|p| json!({"publisherUserId": p.user_id, "publisherMeta": p.meta}))
                        .collect();
                    json!({"topicName": info.topic_name, "totalPublisher": publishers.len(),
                       "publishers": publishers})
                })
                .collect();
            json!({"event": "topic", "eventType": screaming(t.event_type),
                   "channelName": t.channel_name, "publisher": t.publisher,
                   "totalTopics": infos.len(), "topicInfos": infos, "timestamp": t.timestamp})
        }
        RtmEvent::Storage(s) => json!({"event": "storage",
            "storageType": screaming(s.storage_type), "eventType": screaming(s.event_type),
            "channelType": s.channel_type.to_string(), "channelName": s.channel_name,
            "publisher": s.publisher, "data": storage_data(&s.data), "timestamp": s.timestamp}),
        RtmEvent::Lock(l) => json!({"event": "lock", "eventType": screaming(l.event_type),
            "channelType": l.channel_type.to_string(), "channelName": l.channel_name,
            "lockName": l.lock_name, "ttl": l.ttl, "owner": l.owner, "publisher": l.publisher,
            "snapshot": l.snapshot.iter().map(lock_detail).collect::<Vec<_>>(),
            "timestamp": l.timestamp}),
        RtmEvent::MessagesLost(l) => json!({"event": "messagesLost",
            "channelType": l.channel_type.to_string(), "channelName": l.channel_name,
            "from": l.from, "to": l.to, "count": l.count}),
        RtmEvent::LinkState(s) => json!({"event": "linkState",
            "currentState": screaming(s.current_state),
            "previousState": screaming(s.previous_state),
            "serviceType": screaming(s.service_type), "operation": screaming(s.operation),
            "reasonCode": screaming(s.reason_code), "reason": s.reason,
            "affectedChannels": s.affected_channels,
            "unrestoredChannels": s.unrestored_channels, "isResumed": s.is_resumed,
            "timestamp": s.timestamp}),
        RtmEvent::TokenPrivilegeWillExpire { channel_name } => {
            json!({"event": "tokenPrivilegeWillExpire", "channelName": channel_name})
        }
        RtmEvent::Error(e) => json!({"event": "error", "errorCode": e.code.code(),
            "operation": e.operation, "reason": e.reason}),
        other => json!({"event": "unknown", "debug": format!("{other:?}")}),
    }
}
