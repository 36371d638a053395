//! What the server checks in its data directory before it serves: the directory's lock (one
//! server per directory) and the metadata database (intact, and this server's schema).

use std::net::SocketAddr;
use std::path::Path;

use rtm_server::{DataDirError, Server, ServerConfig, ServerError, ServerHandle};

fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        websocket: rtm_server::config::WebSocketConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            tls: None,
        },
        http: rtm_server::config::HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_key: None,
            admin_rate: 1000,
        },
        ..ServerConfig::default()
    }
}

async fn start(dir: &Path) -> Result<ServerHandle, ServerError> {
    Server::builder().config(config(dir)).start().await
}

async fn refused(dir: &Path) -> ServerError {
    match start(dir).await {
        Ok(_) => panic!("the server started on {}", dir.display()),
        Err(e) => e,
    }
}

fn database(dir: &Path) -> std::path::PathBuf {
    dir.join("metadata.sqlite3")
}

#[tokio::test]
async fn a_second_server_on_a_data_directory_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path()).await.unwrap();
    let err = refused(dir.path()).await;
    let pid = std::process::id();
    assert!(
        matches!(&err, ServerError::DataDir(DataDirError::InUse { pid: Some(p), .. }) if *p == pid),
        "{err:?}"
    );
    let expected = format!(
        "data directory {} is in use by another rtm-server (pid {pid})",
        dir.path().display()
    );
    assert!(err.to_string().contains(&expected), "{err}");

    // A server shut down lets go of the directory, and so does one whose handle is dropped.
    first.shutdown().await;
    let second = start(dir.path()).await.unwrap();
    drop(second);
    let third = start(dir.path()).await.unwrap();
    third.shutdown().await;
}

#[tokio::test]
async fn a_damaged_database_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    start(dir.path()).await.unwrap().shutdown().await;
    let path = database(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() >= 3 * page, "{} bytes", bytes.len());
    bytes[2 * page..3 * page].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let err = refused(dir.path()).await;
    assert!(matches!(err, ServerError::Storage(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("damaged"), "{text}");
    assert!(text.contains("Restore it from a backup"), "{text}");
}

#[tokio::test]
async fn a_database_of_another_schema_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = database(dir.path());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE meta_item (id INTEGER PRIMARY KEY, body TEXT);")
        .unwrap();

    let err = refused(dir.path()).await;
    assert!(matches!(err, ServerError::Storage(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("not an rtm metadata database"), "{text}");
}
