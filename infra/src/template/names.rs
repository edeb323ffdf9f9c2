//! The stack's shared resources as other resources refer to them: the logs table (one of two,
//! by `RetainLogsTable`), its `recent` index and the runner log group (created, or named by a
//! parameter). The resources themselves, and the policies that name them, use these.

use serde_json::{Value, json};

use super::{att, if_, r, sub_with};

/// The logs table's name.
pub(super) fn logs_table_name() -> Value {
    if_("RetainLogs", r("RetainedLogsTable"), r("LogsTable"))
}

/// The logs table's ARN.
pub(super) fn logs_table_arn() -> Value {
    if_(
        "RetainLogs",
        att("RetainedLogsTable", "Arn"),
        att("LogsTable", "Arn"),
    )
}

/// The `recent` index of the logs table (listing executions).
pub(super) fn recent_index_arn() -> Value {
    sub_with("${Table}/index/recent", json!({"Table": logs_table_arn()}))
}

/// The log group executions write to.
pub(super) fn runner_group_name() -> Value {
    if_(
        "CreateRunnerLogGroup",
        r("RunnerLogGroup"),
        r("RunnerLogGroupName"),
    )
}

/// The runner log group's ARN (`:*`, its streams).
pub(super) fn runner_group_arn() -> Value {
    sub_with(
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${Group}:*",
        json!({"Group": runner_group_name()}),
    )
}
