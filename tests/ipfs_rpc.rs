//! The IPFS RPC client's error handling, against servers that refuse, hang,
//! or answer with kubo's error shape, plus kubo's answer shapes for the
//! calls whose fields are easy to get wrong (`null` lists, NDJSON `add`).
//! The test against a real engine comes with the built-in daemon (issue 3).

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use ipfs_kit_p2p::ipfs_rpc::{IpfsClient, RpcError};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = IpfsClient::new(format!("127.0.0.1:{port}"));
    let err = client.id().await.unwrap_err();
    assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn a_hanging_daemon_times_out_on_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepts and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut client = IpfsClient::new(addr);
    client.timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Timeout {
                call: "version",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn kubo_error_shape_becomes_an_rpc_error() {
    let app = Router::new()
        .route(
            "/api/v0/pin/add",
            post(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"Message":"invalid path \"nonsense\": path does not have enough components","Code":0,"Type":"error"}"#,
                )
            }),
        )
        .route("/api/v0/id", post(|| async { (StatusCode::BAD_GATEWAY, "<html>proxy error</html>") }));
    let client = IpfsClient::new(serve(app).await);
    match client.pin_add("nonsense").await.unwrap_err() {
        RpcError::Rpc {
            call,
            status,
            message,
            ..
        } => {
            assert_eq!((call, status), ("pin/add", 500));
            assert!(message.contains("invalid path"), "{message}");
        }
        other => panic!("expected an RPC error, got {other}"),
    }
    let err = client.id().await.unwrap_err();
    assert!(
        matches!(err, RpcError::Protocol { status: 502, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn kubo_answer_shapes_parse() {
    let app = Router::new()
        .route("/api/v0/pin/ls", post(|| async { r#"{"Keys":{"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o":{"Type":"recursive"}}}"# }))
        .route("/api/v0/swarm/peers", post(|| async { r#"{"Peers":null}"# }))
        .route(
            "/api/v0/add",
            post(|| async {
                "{\"Name\":\"hello.txt\",\"Bytes\":12}\n{\"Name\":\"hello.txt\",\"Hash\":\"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\",\"Size\":\"20\"}\n"
            }),
        );
    let client = IpfsClient::new(serve(app).await);
    assert_eq!(
        client.pin_ls().await.unwrap(),
        vec!["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o".to_string()]
    );
    assert!(client.swarm_peers().await.unwrap().is_empty());
    let added = client
        .add("hello.txt", b"hello world\n".to_vec())
        .await
        .unwrap();
    assert_eq!(added.hash, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o");
}
