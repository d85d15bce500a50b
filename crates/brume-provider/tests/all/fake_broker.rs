//! A tiny broker double: one WebSocket endpoint speaking `brume_api::wire`
//! and `GET /v1/blobs/{digest}`. Each accepted connection is handed to the
//! test as a [`Conn`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use brume_api::wire::{self, Challenge, FromProvider, Hello, ToProvider, Welcome};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

pub const TOKEN: &str = "blob-token";

pub struct Conn {
    pub hello: Hello,
    to: mpsc::UnboundedSender<Message>,
    from: mpsc::UnboundedReceiver<(u32, FromProvider)>,
    /// While set, the broker answers nothing (to trip the heartbeat).
    pub mute: Arc<AtomicBool>,
}

impl Conn {
    #[allow(clippy::needless_pass_by_value)] // call sites read better by value
    pub fn send(&self, ch: u32, m: ToProvider) {
        let _ = self.to.send(Message::Binary(m.encode(ch)));
    }

    /// The next frame that is not a heartbeat.
    pub async fn recv(&mut self) -> (u32, FromProvider) {
        loop {
            let f = tokio::time::timeout(Duration::from_secs(30), self.from.recv())
                .await
                .expect("a frame within 30 s")
                .expect("connection open");
            if !matches!(f.1, FromProvider::Ping(_) | FromProvider::Pong(_)) {
                return f;
            }
        }
    }

    /// Non-heartbeat frames arriving within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> Vec<(u32, FromProvider)> {
        let mut got = Vec::new();
        let end = tokio::time::Instant::now() + d;
        while let Ok(Some(f)) = tokio::time::timeout_at(end, self.from.recv()).await {
            if !matches!(f.1, FromProvider::Ping(_) | FromProvider::Pong(_)) {
                got.push(f);
            }
        }
        got
    }

    /// Resolves when the provider closes the connection.
    pub async fn closed(&mut self) {
        while self.from.recv().await.is_some() {}
    }
}

struct St {
    blobs: HashMap<String, Bytes>,
    heartbeat_ms: u64,
    conns: mpsc::UnboundedSender<Conn>,
}

pub struct FakeBroker {
    pub url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl FakeBroker {
    pub async fn start(blobs: &[&[u8]], heartbeat_ms: u64) -> FakeBroker {
        let blobs = blobs
            .iter()
            .map(|b| {
                (
                    brume_sandbox::Digest::of(b).to_string(),
                    Bytes::copy_from_slice(b),
                )
            })
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let st = Arc::new(St {
            blobs,
            heartbeat_ms,
            conns: tx,
        });
        let app = axum::Router::new()
            .route("/v1/provider/connect", get(connect))
            .route("/v1/blobs/{digest}", get(blob))
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeBroker {
            url: format!("http://{addr}"),
            conns: rx,
        }
    }

    pub async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(30), self.conns.recv())
            .await
            .expect("a provider connects within 30 s")
            .expect("broker running")
    }
}

async fn blob(
    State(st): State<Arc<St>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Bytes, StatusCode> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    st.blobs.get(&digest).cloned().ok_or(StatusCode::NOT_FOUND)
}

async fn connect(ws: WebSocketUpgrade, State(st): State<Arc<St>>) -> axum::response::Response {
    ws.on_upgrade(move |socket| session(socket, st))
}

async fn session(mut socket: WebSocket, st: Arc<St>) {
    let nonce = Bytes::from_static(&[7; 32]);
    let challenge = ToProvider::Challenge(Challenge {
        broker_id: "0xfake".into(),
        nonce: nonce.clone(),
        protocol: brume_api::PROTOCOL_VERSION,
    });
    if socket
        .send(Message::Binary(challenge.encode(wire::CONTROL)))
        .await
        .is_err()
    {
        return;
    }
    let hello = match socket.recv().await {
        Some(Ok(Message::Binary(b))) => match FromProvider::decode(&b) {
            Ok((_, FromProvider::Hello(h))) => h,
            other => panic!("expected Hello, got {other:?}"),
        },
        other => panic!("expected Hello, got {other:?}"),
    };
    let msg = wire::handshake_message("0xfake", &nonce);
    brume_identity::verify(msg.as_bytes(), &hello.signature, &hello.address)
        .expect("the Hello signature verifies");
    let welcome = ToProvider::Welcome(Welcome {
        session: 1,
        heartbeat_ms: st.heartbeat_ms,
        blob_token: TOKEN.into(),
        measured: None,
        measured_memory: None,
    });
    if socket
        .send(Message::Binary(welcome.encode(wire::CONTROL)))
        .await
        .is_err()
    {
        return;
    }
    let (to_tx, mut to_rx) = mpsc::unbounded_channel::<Message>();
    let (from_tx, from_rx) = mpsc::unbounded_channel();
    let mute = Arc::new(AtomicBool::new(false));
    let _ = st.conns.send(Conn {
        hello,
        to: to_tx.clone(),
        from: from_rx,
        mute: mute.clone(),
    });
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(m) = to_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        let Message::Binary(b) = m else {
            if matches!(m, Message::Close(_)) {
                break;
            }
            continue;
        };
        let (ch, f) = FromProvider::decode(&b).expect("the provider sends valid frames");
        if let FromProvider::Ping(n) = f
            && !mute.load(Ordering::Relaxed)
        {
            let _ = to_tx.send(Message::Binary(ToProvider::Pong(n).encode(ch)));
        }
        let _ = from_tx.send((ch, f));
    }
    writer.abort();
}
