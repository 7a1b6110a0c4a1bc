//! An in-process OpenAI chat-completions endpoint that replays a script of answers and keeps
//! every request body it received, byte for byte.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use culprit_agent::{LlmConfig, LlmMode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// HTTP 200 with this chat completion.
    Completion(Value),
    /// The completion after a delay.
    Delayed(Duration, Value),
    /// Any status, headers and body.
    Raw(u16, Vec<(&'static str, &'static str)>, String),
    /// Never answers.
    Stall,
}

#[derive(Default)]
pub struct Script {
    replies: Mutex<VecDeque<Reply>>,
    /// Answers every request sent with tools off (the final verdict call), when set.
    final_reply: Option<Reply>,
    bodies: Mutex<Vec<String>>,
}

impl Script {
    /// Every request body received, as raw text.
    pub fn raw_bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// Every request body received, parsed.
    pub fn requests(&self) -> Vec<Value> {
        self.raw_bodies()
            .iter()
            .map(|b| serde_json::from_str(b).expect("request bodies are JSON"))
            .collect()
    }
}

async fn chat(State(script): State<Arc<Script>>, body: Bytes) -> Response {
    script
        .bodies
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    let tools_off = serde_json::from_slice::<Value>(&body)
        .map(|v| v.get("tools").is_none())
        .unwrap_or(false);
    let reply = match &script.final_reply {
        Some(r) if tools_off => Some(r.clone()),
        _ => script.replies.lock().unwrap().pop_front(),
    };
    match reply {
        Some(Reply::Completion(v)) => axum::Json(v).into_response(),
        Some(Reply::Delayed(d, v)) => {
            tokio::time::sleep(d).await;
            axum::Json(v).into_response()
        }
        Some(Reply::Raw(status, headers, body)) => {
            let mut map = HeaderMap::new();
            map.insert("content-type", HeaderValue::from_static("application/json"));
            for (k, v) in headers {
                map.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            (StatusCode::from_u16(status).unwrap(), map, body).into_response()
        }
        Some(Reply::Stall) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"error\":{\"message\":\"script exhausted: the agent made more calls than scripted\",\"type\":\"test\",\"param\":null,\"code\":null}}",
        )
            .into_response(),
    }
}

/// Starts the endpoint on 127.0.0.1:0; returns its `/v1` base URL and the script.
pub async fn serve(replies: Vec<Reply>) -> (String, Arc<Script>) {
    start(Script {
        replies: Mutex::new(replies.into()),
        final_reply: None,
        bodies: Mutex::new(Vec::new()),
    })
    .await
}

/// Like [`serve`], but every tools-off request is answered with `final_reply`.
pub async fn serve_with_final(replies: Vec<Reply>, final_reply: Reply) -> (String, Arc<Script>) {
    start(Script {
        replies: Mutex::new(replies.into()),
        final_reply: Some(final_reply),
        bodies: Mutex::new(Vec::new()),
    })
    .await
}

async fn start(script: Script) -> (String, Arc<Script>) {
    let script = Arc::new(script);
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), script)
}

/// A base URL nothing listens on.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

fn completion(message: Value) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    })
}

/// The model calls one tool (`arguments` is sent verbatim, so it may be malformed).
pub fn tool_call(name: &str, arguments: &str) -> Reply {
    Reply::Completion(completion(json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{
            "id": format!("call_{name}_{}", arguments.len()),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }],
    })))
}

/// The model answers with text.
pub fn content(text: &str) -> Reply {
    Reply::Completion(completion(json!({"role": "assistant", "content": text})))
}

/// A `submit_verdict` argument object.
pub fn verdicts(list: &[(&str, &str, f64, &[&str])], rationale: &str) -> Value {
    json!({
        "verdicts": list.iter().map(|(s, v, c, ids)| json!({
            "service": s, "verdict": v, "confidence": c, "evidence_ids": ids,
        })).collect::<Vec<_>>(),
        "rationale": rationale,
    })
}

/// A configuration for the scripted endpoint: short timeouts, no key.
pub fn config(base_url: &str, mode: LlmMode) -> LlmConfig {
    LlmConfig {
        enabled: true,
        base_url: base_url.to_string(),
        model: "scripted".into(),
        api_key_env: "CULPRIT_TEST_UNSET_LLM_KEY".into(),
        mode,
        call_timeout_ms: 2_000,
        incident_timeout_ms: 10_000,
        ..LlmConfig::default()
    }
}

/// The messages of a request with the given role.
pub fn messages<'a>(request: &'a Value, role: &str) -> Vec<&'a Value> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .collect()
}
