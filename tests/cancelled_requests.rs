//! A caller that goes away mid-request leaves nothing half done: every
//! request runs to its end in its own task (`http::serve`). Cut off at an
//! await, a request used to stop there; cut off while a store transaction
//! was beginning, it left the pooled connection inside that transaction
//! (sqlx), and later requests served by it failed.

mod common;
use common::*;

use std::time::Duration;

/// A registration whose caller hangs up while its secret is being hashed
/// (argon2: far longer than the caller waits) is still completed and
/// stored, like one whose answer was lost on the way back.
async fn a_request_whose_caller_hangs_up_still_completes(db: Db) {
    let server = Server::start(db).await;
    // The whole request is sent, then the connection is closed at once,
    // long before argon2 is done with the new client's secret.
    let body = serde_json::json!({
        "client_name": "hung up",
        "redirect_uris": ["http://127.0.0.1:53682/callback"],
        "token_endpoint_auth_method": "client_secret_basic",
    })
    .to_string();
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.port,
        body.len()
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        stream.flush().await.expect("flush");
        // Dropped here: the caller hangs up without reading the answer.
    }
    // The request goes on without its caller.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.cli(&["clients", "list"]);
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        // `clients list`: id, method, source, grant types.
        if listed
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("dcr"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the registration was abandoned with its caller:\n{listed}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the server goes on answering.
    service_token(&server).await;
}

on_both_databases!(a_request_whose_caller_hangs_up_still_completes);
