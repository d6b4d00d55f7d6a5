//! An `InputRequiredResult` from a 2026-07-28-only upstream, relayed to a
//! handshake-era client: each input request goes to the client as a
//! server-to-client request (under a minted id) on the open POST stream; the
//! client's JSON-RPC responses arrive as POSTs, possibly on another instance,
//! which keeps each in the store's kv (`bridge:answer:<session>:<id digest>`)
//! for [`ANSWER_TTL`]. The instance holding the stream collects them there and
//! retries the original request with `inputResponses` and the `requestState`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use session_store::{KvCondition, KvKey, SessionId};
use tokio::sync::mpsc;

use crate::{
    bridge::{call, digest},
    errors::ProxyError,
    modern::reply::Exchange,
    state::AppState,
};

/// How long a client's answer is kept, and how long the stream waits for it.
pub const ANSWER_TTL: Duration = Duration::from_secs(600);

/// How often the instance holding the stream reads the answers.
const POLL_STEP: Duration = Duration::from_millis(100);

/// The kv key of the answer to server-to-client request `id` in `session`.
fn answer_key(session: &SessionId, id: &Value) -> Result<KvKey, ProxyError> {
    KvKey::new(format!(
        "bridge:answer:{session}:{}",
        digest(&id.to_string())
    ))
    .map_err(|error| ProxyError::Store(error.to_string()))
}

/// The input requests and `requestState` of an `InputRequiredResult`
/// response; `None`: the response is no `InputRequiredResult`.
pub fn input_required(response: &Value) -> Option<(Map<String, Value>, Option<String>)> {
    let result = response.get("result")?;
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let requests = result
        .get("inputRequests")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let state = result
        .get("requestState")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((requests, state))
}

/// Keeps the client's `response` (to a server-to-client request the bridge
/// sent) for the instance holding the stream.
pub async fn keep_answer(
    app: &AppState,
    session: &SessionId,
    response: &Value,
) -> Result<(), ProxyError> {
    let Some(id) = response.get("id") else {
        return Ok(());
    };
    let key = answer_key(session, id)?;
    app.store
        .kv_put(
            &key,
            response.to_string().as_bytes(),
            ANSWER_TTL,
            KvCondition::Any,
        )
        .await?;
    Ok(())
}

/// Sends `requests` (key -> `{method, params}`) to the client on `tx` and
/// waits for every answer; the `inputResponses` they make (key -> result).
/// Errors name why the round cannot go on (the client left, answered with an
/// error, or did not answer in time).
pub async fn ask(
    app: &AppState,
    exchange: &Exchange,
    session: &SessionId,
    tx: &mpsc::Sender<Bytes>,
    requests: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut waiting = Vec::new();
    for (key, request) in requests {
        let id = app.bridge.ids.mint();
        let message = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": request.get("method").cloned().unwrap_or(Value::Null),
            "params": request.get("params").cloned().unwrap_or_else(|| json!({})),
        });
        call::send_event(app, exchange, tx, &message).await;
        let kv = answer_key(session, &id).map_err(|error| error.to_string())?;
        waiting.push((key, kv));
    }
    let mut answers = Map::new();
    let deadline = tokio::time::Instant::now() + ANSWER_TTL;
    while !waiting.is_empty() {
        if tx.is_closed() {
            return Err("the client left before answering".to_owned());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the client did not answer the input requests in time".to_owned());
        }
        let mut still = Vec::new();
        for (key, kv) in waiting {
            match app.store.kv_get(&kv).await {
                Ok(Some(entry)) => {
                    let response: Value = serde_json::from_slice(&entry.value).unwrap_or_default();
                    if let Err(error) = app.store.kv_delete(&kv, KvCondition::Any).await {
                        tracing::debug!(%error, "bridge: an answer was not removed");
                    }
                    match response.get("result") {
                        Some(result) => {
                            answers.insert(key, result.clone());
                        }
                        None => {
                            return Err(
                                "the client answered an input request with an error".to_owned()
                            )
                        }
                    }
                }
                Ok(None) => still.push((key, kv)),
                Err(error) => {
                    tracing::debug!(%error, "bridge: answers unreadable; retrying");
                    still.push((key, kv));
                }
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(POLL_STEP).await;
        }
    }
    Ok(answers)
}

/// The retry of `request` carrying `answers` and `state`.
pub fn with_answers(request: &Value, answers: Map<String, Value>, state: Option<String>) -> Value {
    let mut retry = request.clone();
    if let Some(params) = retry.get_mut("params").and_then(Value::as_object_mut) {
        params.insert("inputResponses".to_owned(), Value::Object(answers));
        match state {
            Some(state) => params.insert("requestState".to_owned(), Value::String(state)),
            None => params.remove("requestState"),
        };
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_required_result_is_retried_with_the_answers_and_its_state() {
        let asked = json!({"id": 1, "result": {"resultType": "input_required", "inputRequests": {"q": {"method": "elicitation/create", "params": {}}}, "requestState": "s"}});
        let (requests, state) = input_required(&asked).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(state.as_deref(), Some("s"));
        assert!(input_required(&json!({"id": 1, "result": {"resultType": "complete"}})).is_none());
        let mut answers = Map::new();
        answers.insert("q".to_owned(), json!({"action": "accept"}));
        let retry = with_answers(
            &json!({"id": 1, "method": "tools/call", "params": {"name": "t"}}),
            answers,
            state,
        );
        assert_eq!(retry["params"]["inputResponses"]["q"]["action"], "accept");
        assert_eq!(retry["params"]["requestState"], "s");
    }
}
