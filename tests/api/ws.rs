//! A graphql-transport-ws client for tests: connect, send and read JSON messages, and
//! see how the server closed the connection.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket offering graphql-transport-ws, without `connection_init`.
pub async fn open(address: &str) -> Socket {
    let mut request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Opens a socket and completes `connection_init` (with a bearer token when given).
pub async fn connect(address: &str, token: Option<&str>) -> Socket {
    let mut socket = open(address).await;
    let payload = match token {
        Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
        None => json!({}),
    };
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let ack = next(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// Subscribes (or runs a query or mutation) under `id`.
pub async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    let payload = json!({ "query": query, "variables": variables });
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": payload }),
    )
    .await;
}

/// The next text message as JSON; panics when the socket closes first.
pub async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a message within 15 s")
            .expect("the socket stays open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed by the server: {frame:?}"),
            _ => {}
        }
    }
}

/// The first `next` or `error` message for operation `id`, skipping others (such as the
/// `complete` of an earlier operation).
pub async fn answer(socket: &mut Socket, id: &str) -> Value {
    loop {
        let message = next(socket).await;
        if message["id"] == id && message["type"] != "complete" {
            return message;
        }
    }
}

/// Reads until the server closes the connection and returns its close code and reason
/// (`None` when it closed without a close frame). Panics after `within`.
pub async fn closed(socket: &mut Socket, within: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closed the connection in time")
}
