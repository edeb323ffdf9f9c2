//! One least-privilege IAM policy per function: the actions each one calls, on this stack's
//! resources only (a test checks there is no wildcard action or resource).

use runvoy_core::function::Function;
use serde_json::{Value, json};

use super::names::{logs_table_arn, recent_index_arn, runner_group_arn};
use super::{att, r, sub};

fn statement(actions: &[&str], resources: Vec<Value>) -> Value {
    json!({"Effect": "Allow", "Action": actions, "Resource": resources})
}

/// What each function may do, and nothing more.
pub(super) fn permissions(function: Function) -> Vec<Value> {
    // A commit is one transaction of Puts (each checked as PutItem); duplicates are found with
    // a Query of the idempotency records; an execution that outlives its items' expiry has
    // them extended (UpdateItem of `expires_at`).
    let logs_rw = [
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ];
    let conns_fanout = [
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ];
    // The WebSocket handler stores, reads, advances and forgets one connection, and counts an
    // execution's connections at `$connect` (a cap per execution).
    let conns_all = [
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
    ];
    // POST pushes; DELETE closes a connection whose token expired.
    let push = statement(
        &["execute-api:ManageConnections"],
        ["POST", "DELETE"]
            .iter()
            .map(|m| {
                sub(&format!(
                    "arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{WebSocketApi}}/prod/{m}/@connections/*"
                ))
            })
            .collect(),
    );
    let read_source = statement(&["logs:GetLogEvents"], vec![runner_group_arn()]);
    let secrets = |ids: &[&str]| {
        statement(
            &["secretsmanager:GetSecretValue"],
            ids.iter().map(|id| r(id)).collect(),
        )
    };
    let own_logs = statement(
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        vec![sub(&format!(
            "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/aws/lambda/${{AWS::StackName}}-{}:*",
            function.name()
        ))],
    );
    let conns = att("ConnectionsTable", "Arn");
    let mut s = vec![own_logs];
    match function {
        Function::Forwarder => {
            s.push(statement(&logs_rw, vec![logs_table_arn()]));
            s.push(statement(&conns_fanout, vec![conns]));
            s.push(push);
            s.push(statement(
                &["sqs:SendMessage"],
                vec![att("ForwarderDeadLetterQueue", "Arn")],
            ));
        }
        Function::Api => {
            s.push(statement(&logs_rw, vec![logs_table_arn()]));
            // `GET /api/v1/executions` reads the `recent` index.
            s.push(statement(&["dynamodb:Query"], vec![recent_index_arn()]));
            s.push(statement(&conns_fanout, vec![conns]));
            s.push(read_source);
            s.push(secrets(&["ApiSecret", "TokenSecret"]));
            s.push(push);
        }
        Function::Websocket => {
            s.push(statement(
                &["dynamodb:GetItem", "dynamodb:Query"],
                vec![logs_table_arn()],
            ));
            s.push(statement(&conns_all, vec![conns]));
            // The token secret only: a WebSocket client can never reach the API keys.
            s.push(secrets(&["TokenSecret"]));
            s.push(push);
        }
        Function::Completion => {
            s.push(statement(&logs_rw, vec![logs_table_arn()]));
            s.push(statement(&conns_fanout, vec![conns]));
            s.push(read_source);
            s.push(push);
            s.push(statement(
                &["sqs:SendMessage"],
                vec![att("CompletionDeadLetterQueue", "Arn")],
            ));
            // The janitor takes back what Lambda gave up on.
            s.push(statement(
                &["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                vec![
                    att("CompletionDeadLetterQueue", "Arn"),
                    att("ForwarderDeadLetterQueue", "Arn"),
                ],
            ));
        }
    }
    s
}
