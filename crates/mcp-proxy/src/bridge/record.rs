//! Recording a bridged exchange's upstream side: the messages as the upstream
//! sent or got them (handshake form) go on the exchange's stream next to the
//! client's form, marked with the frame header [`FORM_HEADER`], so an operator
//! sees both and what was translated.

use serde_json::Value;
use session_store::{Clock, Direction, Frame, SystemClock};

use crate::{modern::reply::Exchange, state::AppState};

/// Frame header marking a message in the upstream's form (value `upstream`).
pub const FORM_HEADER: &str = "mcp-proxy-bridge-form";

/// Records `message` in the upstream's form (`to_upstream`: sent by the proxy to
/// the upstream; else sent by the upstream).
pub async fn upstream_form(
    app: &AppState,
    exchange: &Exchange,
    message: &Value,
    to_upstream: bool,
) {
    let Some(recording) = &exchange.recording else {
        return;
    };
    let direction = if to_upstream {
        Direction::ClientToServer
    } else {
        Direction::ServerToClient
    };
    let frame = Frame::new(
        direction,
        SystemClock.now(),
        message.to_string().into_bytes(),
    )
    .with_stream_id(recording.stream.as_str())
    .with_header(FORM_HEADER, "upstream");
    if let Err(error) = app.store.append_frame(&recording.session, frame).await {
        app.metrics.frame_not_recorded();
        crate::recorder::log_not_recorded(
            &recording.session,
            1,
            &error,
            error.is_retryable(),
            "bridged message forwarded without being recorded",
        );
    }
}
