//! Pins the JSON of every type of spec §4: field names, and optional fields omitted when absent.

use runvoy_core::wire::{
    ClientMessage, CompleteRequest, ErrorBody, LogsResponse, ServerMessage, StatusResponse,
};
use runvoy_core::{LogEvent, Status};
use serde_json::{Value, json};

fn ev(i: u64) -> LogEvent {
    LogEvent {
        index: i,
        event_id: format!("id{i}"),
        timestamp: 1_700_000_000_000 + i as i64,
        message: format!("line {i}"),
    }
}

fn to(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn log_event() {
    assert_eq!(
        to(&ev(3)),
        json!({"index":3,"event_id":"id3","timestamp":1_700_000_000_003_i64,"message":"line 3"})
    );
}

#[test]
fn statuses_are_upper_case() {
    for (s, name) in [
        (Status::Running, "RUNNING"),
        (Status::Succeeded, "SUCCEEDED"),
        (Status::Failed, "FAILED"),
        (Status::Stopped, "STOPPED"),
    ] {
        assert_eq!(to(&s), json!(name));
        assert_eq!(Status::parse(name), Some(s));
    }
}

#[test]
fn logs_response_running_and_terminal() {
    let running = LogsResponse {
        execution_id: "x".into(),
        status: Status::Running,
        events: vec![ev(1)],
        last_index: 1,
        has_more: true,
        final_index: None,
        exit_code: None,
        websocket_url: Some("ws://h/ws?execution_id=x&token=t".into()),
    };
    assert_eq!(
        to(&running),
        json!({"execution_id":"x","status":"RUNNING","events":[to(&ev(1))],"last_index":1,
               "has_more":true,"websocket_url":"ws://h/ws?execution_id=x&token=t"})
    );
    let done = LogsResponse {
        status: Status::Failed,
        events: vec![],
        has_more: false,
        final_index: Some(9),
        exit_code: Some(3),
        websocket_url: None,
        ..running
    };
    assert_eq!(
        to(&done),
        json!({"execution_id":"x","status":"FAILED","events":[],"last_index":1,
               "has_more":false,"final_index":9,"exit_code":3})
    );
}

#[test]
fn status_response() {
    let s = StatusResponse {
        execution_id: "x".into(),
        status: Status::Running,
        last_index: 4,
        final_index: None,
        exit_code: None,
        created_at: 1,
        updated_at: 2,
    };
    assert_eq!(
        to(&s),
        json!({"execution_id":"x","status":"RUNNING","last_index":4,"created_at":1,"updated_at":2})
    );
}

#[test]
fn server_messages() {
    let logs = ServerMessage::Logs {
        execution_id: "x".into(),
        events: vec![ev(1), ev(2)],
    };
    assert_eq!(
        to(&logs),
        json!({"type":"logs","execution_id":"x","events":[to(&ev(1)),to(&ev(2))]})
    );
    let status = ServerMessage::Status {
        execution_id: "x".into(),
        status: Status::Succeeded,
        exit_code: None,
        final_index: 2,
    };
    assert_eq!(
        to(&status),
        json!({"type":"status","execution_id":"x","status":"SUCCEEDED","final_index":2})
    );
    let with_code = ServerMessage::Status {
        execution_id: "x".into(),
        status: Status::Failed,
        exit_code: Some(7),
        final_index: 2,
    };
    assert_eq!(to(&with_code)["exit_code"], json!(7));
    let err = ServerMessage::Error {
        code: "bad_message".into(),
        error: "what happened".into(),
    };
    assert_eq!(
        to(&err),
        json!({"type":"error","code":"bad_message","error":"what happened"})
    );
}

#[test]
fn client_messages() {
    assert_eq!(
        serde_json::from_str::<ClientMessage>(r#"{"action":"resume","since_index":12}"#).unwrap(),
        ClientMessage::Resume { since_index: 12 }
    );
    assert_eq!(
        serde_json::from_str::<ClientMessage>(r#"{"action":"ping"}"#).unwrap(),
        ClientMessage::Ping
    );
    assert_eq!(
        to(&ClientMessage::Resume { since_index: 1 }),
        json!({"action":"resume","since_index":1})
    );
    assert!(
        serde_json::from_str::<ClientMessage>(r#"{"action":"resume","since_index":-1}"#).is_err()
    );
    assert!(serde_json::from_str::<ClientMessage>(r#"{"action":"jump"}"#).is_err());
}

#[test]
fn error_body_and_complete_request() {
    assert_eq!(
        to(&ErrorBody {
            error: "e".into(),
            code: "c".into()
        }),
        json!({"error":"e","code":"c"})
    );
    let c: CompleteRequest = serde_json::from_str(r#"{"status":"FAILED","exit_code":2}"#).unwrap();
    assert_eq!((c.status, c.exit_code), (Status::Failed, Some(2)));
    assert_eq!(
        to(&CompleteRequest {
            status: Status::Succeeded,
            exit_code: None
        }),
        json!({"status":"SUCCEEDED"})
    );
}
