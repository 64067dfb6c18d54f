//! A fake 360dialog (and a fake pharmacy endpoint for forwards) as a real HTTP server on a
//! loopback port: it records every request and answers from a script, success by default.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a fresh wamid (or `{"success": true}` for read receipts).
    Ok,
    /// Any status with a JSON body.
    Status(u16, Value),
    /// A Meta error object with this code, as 360dialog relays it (HTTP 400).
    MetaError(i64),
    /// Answer only after this long (to exercise client timeouts).
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Whether the request took effect (a message went out, a forward reached the pharmacy)
    /// — also when the answer never arrived (`Fault::Slow`, `Fault::Broken`).
    pub processed: bool,
    /// The fault injected on this request, if any.
    pub fault: Option<Fault>,
}

/// A fault the fake injects at random ([`Fake::chaos`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429: not processed.
    TooManyRequests,
    /// 500 or 503: not processed.
    ServerError,
    /// Processed, but the answer comes after the client's timeout.
    Slow,
    /// Processed, then the connection breaks in the middle of the answer.
    Broken,
}

impl Fault {
    /// The outcome is unknown to the caller: it took effect, but the caller saw a failure.
    pub fn is_ambiguous(self) -> bool {
        matches!(self, Fault::Slow | Fault::Broken)
    }
}

/// Rates (0..1) of faults the fake injects on POSTs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chaos {
    pub too_many_requests: f64,
    pub server_error: f64,
    pub slow: f64,
    pub broken: f64,
    /// How late a `Slow` answer comes (longer than the client's timeout).
    pub slow_for: Duration,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// How the fake serves a media file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// `GET /{id}` and the download both work; the hash is right.
    Good,
    /// The announced SHA-256 is not the file's.
    WrongHash,
    /// `GET /{id}` answers 404 (expired or unknown media id).
    NotFound,
    /// The download sends each 16 KiB piece after this many milliseconds.
    Slow(u64),
    /// `GET /{id}` announces no size; the download is larger than the relay's limit.
    Unannounced,
    /// The download answers 500.
    DownloadFails,
}

#[derive(Default)]
struct Inner {
    media: std::collections::HashMap<String, (Vec<u8>, MediaMode)>,
    script: VecDeque<Reply>,
    requests: Vec<Recorded>,
    next_id: u64,
    /// Like WhatsApp's throughput limit: more than this many requests in any second get 429.
    limit_per_second: Option<usize>,
    recent: VecDeque<std::time::Instant>,
    rejected: usize,
    chaos: Option<(Chaos, crate::faults::Dice)>,
}

/// The fake server; clones share state.
#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl Fake {
    /// Starts a fake on a free loopback port. Every POST path is accepted.
    pub async fn start() -> Fake {
        Fake::start_at(0).await
    }

    /// Starts a fake on loopback port `port` (0: any free one).
    pub async fn start_at(port: u16) -> Fake {
        let mut fake = Fake::default();
        let app = Router::new()
            .route("/{*path}", post(answer).get(media))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind loopback");
        fake.url = format!("http://{}", listener.local_addr().expect("local addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// Serves `bytes` as WhatsApp media `id`.
    pub fn add_media(&self, id: &str, bytes: Vec<u8>, mode: MediaMode) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .media
            .insert(id.to_owned(), (bytes, mode));
    }

    /// The base64 SHA-256 of `bytes`, as webhooks carry it.
    pub fn sha256_b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
    }

    /// Queues answers for the next requests (then success again).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .script
            .extend(replies);
    }

    /// Injects faults on POSTs at random, from `seed` (printed by the suites to replay a run).
    pub fn chaos(&self, chaos: Chaos, seed: u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).chaos =
            Some((chaos, crate::faults::Dice::new(seed)));
    }

    /// Stops injecting faults.
    pub fn calm(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).chaos = None;
    }

    /// Answers 429 to requests beyond `n` in any one second.
    pub fn limit_rate(&self, n: usize) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .limit_per_second = Some(n);
    }

    /// How many requests the rate limit refused.
    pub fn rejected(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .clone()
    }

    /// The wamids handed out so far, in order.
    pub fn wamids(&self) -> Vec<String> {
        (1..=self.inner.lock().unwrap_or_else(|p| p.into_inner()).next_id)
            .map(|i| format!("wamid.FAKE{i:06}"))
            .collect()
    }
}

async fn answer(
    State(fake): State<Fake>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (reply, wamid, fault) = {
        let mut inner = fake.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fault = inner.chaos.as_ref().and_then(|(c, dice)| {
            let r = dice.roll();
            let mut edge = c.too_many_requests;
            if r < edge {
                return Some(Fault::TooManyRequests);
            }
            edge += c.server_error;
            if r < edge {
                return Some(Fault::ServerError);
            }
            edge += c.slow;
            if r < edge {
                return Some(Fault::Slow);
            }
            edge += c.broken;
            (r < edge).then_some(Fault::Broken)
        });
        let slow_for = inner
            .chaos
            .as_ref()
            .map(|(c, _)| c.slow_for)
            .unwrap_or_default();
        inner.requests.push(Recorded {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
            processed: !matches!(fault, Some(Fault::TooManyRequests | Fault::ServerError)),
            fault,
        });
        match fault {
            Some(Fault::TooManyRequests) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"error": "injected: too many requests"})),
                )
                    .into_response();
            }
            Some(Fault::ServerError) => {
                let code = if inner.requests.len() % 2 == 0 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return (code, axum::Json(json!({"error": "injected"}))).into_response();
            }
            _ => {}
        }
        let now = std::time::Instant::now();
        while inner
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            inner.recent.pop_front();
        }
        inner.recent.push_back(now);
        let over = inner
            .limit_per_second
            .is_some_and(|n| inner.recent.len() > n);
        let reply = if over {
            inner.rejected += 1;
            Reply::Status(429, json!({"error": "rate limited"}))
        } else {
            inner.script.pop_front().unwrap_or(Reply::Ok)
        };
        // A scripted or rate-limit refusal took no effect either.
        if !matches!(reply, Reply::Ok | Reply::Slow(_))
            && let Some(last) = inner.requests.last_mut()
        {
            last.processed = false;
        }
        if uri.path() == "/media" && matches!(reply, Reply::Ok) {
            // A media upload (multipart): WhatsApp answers with the new media id.
            let n = inner.requests.len();
            return (
                StatusCode::OK,
                axum::Json(json!({"id": format!("FAKEUPLOAD{n}")})),
            )
                .into_response();
        }
        let is_send = serde_json::from_slice::<Value>(&body)
            .ok()
            .is_some_and(|b| b.get("type").is_some());
        let wamid = if matches!(reply, Reply::Ok | Reply::Slow(_)) && is_send {
            inner.next_id += 1;
            Some(format!("wamid.FAKE{:06}", inner.next_id))
        } else {
            None
        };
        let reply = match fault {
            Some(Fault::Slow) => Reply::Slow(slow_for),
            _ => reply,
        };
        (reply, wamid, fault)
    };
    if fault == Some(Fault::Broken) {
        // The status line goes out, then the connection breaks before the body.
        let stream = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("injected: connection broken"))
        });
        return (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response();
    }
    let ok = || match &wamid {
        Some(w) => (
            StatusCode::OK,
            axum::Json(json!({"messaging_product": "whatsapp", "messages": [{"id": w}]})),
        )
            .into_response(),
        None => (StatusCode::OK, axum::Json(json!({"success": true}))).into_response(),
    };
    match reply {
        Reply::Ok => ok(),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            ok()
        }
        Reply::Status(code, body) => (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response(),
        Reply::MetaError(code) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "(#131047) Message failed to send", "type": "OAuthException", "code": code,
                                        "error_data": {"messaging_product": "whatsapp", "details": "recipient 4915100000000"}}})),
        )
            .into_response(),
    }
}

/// `GET /{media-id}` (where the file is) and `GET /whatsapp_business/attachments/?mid=…` (the
/// download, as 360dialog proxies Meta's CDN URL).
/// What the fake's `GET /v1/configs/templates` lists: the shape of 360dialog's answer
/// (docs.360dialog.com, "Templates"), one approved utility template with a parameter and one
/// rejected one.
pub fn template_list() -> Value {
    json!({"count": 2, "filters": {}, "limit": 1000, "offset": 0, "sort": ["id"], "total": 2,
    "waba_templates": [
        {"category": "UTILITY", "language": "de", "name": "abholbereit", "namespace": "c8ae5f90_307a_ca4c_b8f6_d1e2a2573574",
         "rejected_reason": "NONE", "status": "approved",
         "components": [{"type": "BODY", "text": "Guten Tag, Ihre Bestellung {{1}} liegt zur Abholung bereit."}]},
        {"category": "MARKETING", "language": "de", "name": "herbstaktion", "namespace": "c8ae5f90_307a_ca4c_b8f6_d1e2a2573574",
         "rejected_reason": "INVALID_FORMAT", "status": "rejected",
         "components": [{"type": "BODY", "text": "Herbstaktion!"}]}
    ]})
}

/// What the fake's Meta `GET /{waba-id}/message_templates` lists: Meta's shape
/// (developers.facebook.com, WhatsApp Business Account "message_templates" reference): the
/// same two templates in `data`, on two pages (`paging.next`).
pub fn meta_template_page(base: &str, waba: &str, page: u8) -> Value {
    let list = template_list()["waba_templates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let strip = |mut t: Value| {
        if let Some(o) = t.as_object_mut() {
            o.remove("namespace");
            o.remove("rejected_reason");
            o.insert(
                "status".into(),
                json!(o["status"].as_str().unwrap_or("").to_uppercase()),
            );
            o.insert("id".into(), json!(format!("59442547926159{page}")));
        }
        t
    };
    if page == 1 {
        json!({"data": [strip(list[0].clone())], "paging": {"cursors": {"before": "QVFI", "after": "QVFJ"},
               "next": format!("{base}/{waba}/message_templates?limit=1&after=QVFJ")}})
    } else {
        json!({"data": [strip(list[1].clone())], "paging": {"cursors": {"before": "QVFJ", "after": "QVFK"}}})
    }
}

async fn media(State(fake): State<Fake>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_matches('/').to_owned();
    if path == "v1/configs/templates" {
        return axum::Json(template_list()).into_response();
    }
    if let Some(waba) = path.strip_suffix("/message_templates") {
        let page = if uri.query().unwrap_or_default().contains("after=") {
            2
        } else {
            1
        };
        let base = format!(
            "http://{}",
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
        );
        fake.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .push(Recorded {
                path: format!("GET /{path}?{}", uri.query().unwrap_or_default()),
                headers,
                body: Vec::new(),
                processed: true,
                fault: None,
            });
        return axum::Json(meta_template_page(&base, waba, page)).into_response();
    }
    let query = uri.query().unwrap_or_default().to_owned();
    let (entry, id) = {
        let mut inner = fake.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.requests.push(Recorded {
            path: format!("GET /{path}?{query}"),
            headers,
            body: Vec::new(),
            processed: true,
            fault: None,
        });
        let id = if path == "whatsapp_business/attachments" {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("mid="))
                .unwrap_or_default()
                .to_owned()
        } else {
            path.clone()
        };
        (inner.media.get(&id).cloned(), id)
    };
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": 100, "message": "Unsupported get request.", "type": "GraphMethodException"}})),
        )
            .into_response()
    };
    let Some((bytes, mode)) = entry else {
        return not_found();
    };
    if path != "whatsapp_business/attachments" {
        if mode == MediaMode::NotFound {
            return not_found();
        }
        let sha = if mode == MediaMode::WrongHash {
            Fake::sha256_b64(b"something else")
        } else {
            Fake::sha256_b64(&bytes)
        };
        let mut answer = json!({
            "messaging_product": "whatsapp",
            "url": format!("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid={id}&ext=1&hash=ATx"),
            "mime_type": "image/jpeg",
            "sha256": sha,
            "id": id,
        });
        if mode != MediaMode::Unannounced {
            answer["file_size"] = json!(bytes.len());
        }
        return (StatusCode::OK, axum::Json(answer)).into_response();
    }
    match mode {
        MediaMode::DownloadFails => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        MediaMode::Slow(ms) => {
            let pieces: Vec<Vec<u8>> = bytes.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
            let stream =
                futures_util::stream::unfold(pieces.into_iter(), move |mut it| async move {
                    let next = it.next()?;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from(next)), it))
                });
            (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
        }
        _ => (StatusCode::OK, bytes).into_response(),
    }
}
