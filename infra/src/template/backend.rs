//! The backend stack: tables, functions with one least-privilege role each, the WebSocket and
//! HTTP APIs, the subscription filter, the ECS completion rule, the API secret, the forwarder's
//! on-failure queue, alarms and outputs.

use runvoy_core::function::Function;
use serde_json::{Value, json};

use super::iam::permissions;
use super::names::{logs_table_name, runner_group_arn, runner_group_name};
use super::{Resource, Template, att, if_, no_value, r, sub};

/// A function's timeout, in seconds.
fn timeout(function: Function) -> u32 {
    match function {
        Function::Forwarder => 60,
        Function::Api | Function::Websocket => 29,
        // Completion re-reads the whole stream; it saves progress and a retry continues, but
        // one invocation should finish a long execution.
        Function::Completion => 900,
    }
}

fn parameters(t: &mut Template) {
    t.parameter(
        "ArtifactsBucket",
        json!({"Type": "String", "Description": "S3 bucket holding the function zips."}),
    );
    for f in Function::ALL {
        let (id, bin) = (f.logical_id(), f.name());
        t.parameter(format!("{id}CodeKey"), json!({"Type": "String", "Description": format!("S3 key of the {bin} zip (named by its content hash).")}));
    }
    t.parameter(
        "Architecture",
        json!({"Type": "String", "Default": "arm64", "AllowedValues": ["arm64", "x86_64"],
        "Description": "Architecture the function zips were built for."}),
    );
    t.parameter("RunnerLogGroupName", json!({"Type": "String", "Default": "",
        "Description": "Existing log group the executions write to; empty creates /aws/ecs/{stack name}/runner."}));
    t.parameter(
        "StreamTemplate",
        json!({"Type": "String", "Default": "task/runner/{execution_id}",
        "AllowedPattern": "^[^{}]*\\{execution_id\\}[^{}]*$",
        "ConstraintDescription": "must contain {execution_id} once, e.g. task/runner/{execution_id}",
        "Description": "Log stream name of an execution: the ECS awslogs prefix, the container name, then the task id."}),
    );
    t.parameter(
        "RunnerContainerName",
        json!({"Type": "String", "Default": "runner", "AllowedPattern": "^[a-zA-Z0-9_-]{1,255}$",
        "Description": "The container of an ECS task whose exit code is the execution's; only tasks with it complete executions."}),
    );
    t.parameter(
        "RetentionDays",
        json!({"Type": "Number", "Default": 7,
        "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365],
        "Description": "Days log lines live: stored lines after the last write to their execution (TTL), and the runner log group's retention, so an execution expires from both together."}),
    );
    t.parameter(
        "CompletionGraceSeconds",
        json!({"Type": "Number", "Default": 5, "MinValue": 0, "MaxValue": 300,
        "Description": "Seconds after a task stops before completion re-reads its log stream for the final time: a line the task wrote just before it stopped can become readable in CloudWatch Logs only seconds later."}),
    );
    t.parameter(
        "QueueRetentionSeconds",
        json!({"Type": "Number", "Default": 604800, "MinValue": 60, "MaxValue": 1209600,
        "Description": "How long the on-failure queues keep a record (they hold log lines): set by the deploy tool from RetentionDays, at most 14 days."}),
    );
    t.parameter(
        "FunctionLogRetentionDays",
        json!({"Type": "Number", "Default": 30,
        "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365],
        "Description": "Retention of the functions' own log groups."}),
    );
    t.parameter(
        "PointInTimeRecovery",
        json!({"Type": "String", "Default": "false", "AllowedValues": ["true", "false"],
        "Description": "Point-in-time recovery on the logs table."}),
    );
    t.parameter(
        "RetainLogsTable",
        json!({"Type": "String", "Default": "false", "AllowedValues": ["true", "false"],
        "Description": "Keep the logs table when the stack is deleted (choose at creation)."}),
    );
    t.parameter(
        "ApiKey",
        json!({"Type": "String", "NoEcho": true, "MinLength": 16,
        "Description": "The API key clients send in X-API-Key (kept in the API secret)."}),
    );
    t.parameter(
        "EcsClusterArn",
        json!({"Type": "String", "Default": "",
        "Description": "Only complete executions of this ECS cluster; empty for any cluster."}),
    );
    for (f, what) in [
        (Function::Api, "HTTP API"),
        (Function::Websocket, "WebSocket API"),
    ] {
        let id = f.logical_id();
        t.parameter(
            format!("{id}ReservedConcurrency"),
            json!({"Type": "String", "Default": "", "AllowedPattern": "^([1-9][0-9]*)?$",
            "ConstraintDescription": "must be a whole number above 0 (0 would stop the function), or empty to reserve none",
            "Description": format!("Concurrent executions reserved for (and the most allowed to) the {what} function, so that its clients cannot use the account's whole concurrency; empty reserves none (accounts whose limit is 10 cannot reserve any).")}),
        );
    }
    t.parameter(
        "AlarmTopicArn",
        json!({"Type": "String", "Default": "",
        "Description": "SNS topic the alarms notify; empty for none."}),
    );
}

fn conditions(t: &mut Template) {
    t.condition(
        "CreateRunnerLogGroup",
        json!({"Fn::Equals": [r("RunnerLogGroupName"), ""]}),
    );
    t.condition(
        "EnablePitr",
        json!({"Fn::Equals": [r("PointInTimeRecovery"), "true"]}),
    );
    t.condition(
        "RetainLogs",
        json!({"Fn::Equals": [r("RetainLogsTable"), "true"]}),
    );
    t.condition(
        "DeleteLogs",
        json!({"Fn::Equals": [r("RetainLogsTable"), "false"]}),
    );
    t.condition(
        "AnyCluster",
        json!({"Fn::Equals": [r("EcsClusterArn"), ""]}),
    );
    for id in [Function::Api, Function::Websocket].map(Function::logical_id) {
        t.condition(
            Box::leak(format!("Reserve{id}Concurrency").into_boxed_str()),
            json!({"Fn::Not": [{"Fn::Equals": [r(&format!("{id}ReservedConcurrency")), ""]}]}),
        );
    }
    t.condition(
        "HasAlarmTopic",
        json!({"Fn::Not": [{"Fn::Equals": [r("AlarmTopicArn"), ""]}]}),
    );
}

fn tables(t: &mut Template) {
    let logs = json!({
        "TableName": sub("${AWS::StackName}-execution-logs"),
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "execution_id", "AttributeType": "S"},
            {"AttributeName": "log_index", "AttributeType": "N"},
            {"AttributeName": "created_day", "AttributeType": "N"},
            {"AttributeName": "created_at", "AttributeType": "N"}],
        "KeySchema": [
            {"AttributeName": "execution_id", "KeyType": "HASH"},
            {"AttributeName": "log_index", "KeyType": "RANGE"}],
        // Heads only (log items carry no `created_day`): `GET /api/v1/executions`. Added to an
        // existing table in place; heads written before it are listed from their next update.
        "GlobalSecondaryIndexes": [{
            "IndexName": "recent",
            "KeySchema": [
                {"AttributeName": "created_day", "KeyType": "HASH"},
                {"AttributeName": "created_at", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status", "exit_code", "final_index"]},
        }],
        // Encrypted at rest with the AWS-owned key, DynamoDB's default: `SSEEnabled` would move
        // the table to the AWS-managed KMS key, which bills every request.
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": true},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": if_("EnablePitr", json!(true), json!(false))},
    });
    t.resource(
        "LogsTable",
        Resource::new("AWS::DynamoDB::Table", logs.clone())
            .when("DeleteLogs")
            .policy("Delete"),
    );
    t.resource(
        "RetainedLogsTable",
        Resource::new("AWS::DynamoDB::Table", logs)
            .when("RetainLogs")
            // Kept when the stack is deleted, but not when its creation fails and rolls back:
            // a retained table of the same name would make every retry fail "already exists".
            .policy("RetainExceptOnCreate"),
    );
    t.resource(
        "ConnectionsTable",
        Resource::new(
            "AWS::DynamoDB::Table",
            json!({
                "TableName": sub("${AWS::StackName}-connections"),
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"}],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"}],
                "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": true},
            }),
        )
        .policy("Delete"),
    );
}

fn websocket_url(scheme: &str) -> Value {
    sub(&format!(
        "{scheme}://${{WebSocketApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/prod"
    ))
}

fn functions(t: &mut Template) {
    t.resource(
        "RunnerLogGroup",
        Resource::new(
            "AWS::Logs::LogGroup",
            json!({
                "LogGroupName": sub("/aws/ecs/${AWS::StackName}/runner"),
                "RetentionInDays": r("RetentionDays"),
            }),
        )
        .when("CreateRunnerLogGroup")
        .policy("Delete"),
    );
    // Two secrets, so that the WebSocket function can check tokens without being able to
    // read the API keys. `deploy rotate-key` owns the key list after creation: the value is
    // generated (CloudFormation rewrites a generated value only when `GenerateSecretString`
    // itself changes, unlike a `SecretString`, which it writes again on any update of the
    // secret), and `ApiKey` keeps its previous value on every update. `generated` is unused:
    // a template needs one generated key.
    t.resource(
        "ApiSecret",
        Resource::new(
            "AWS::SecretsManager::Secret",
            json!({
                "Name": sub("${AWS::StackName}/api"),
                "Description": "API keys accepted in X-API-Key, newest last (deploy rotate-key).",
                "GenerateSecretString": {
                    "SecretStringTemplate": sub("{\"api_keys\":[\"${ApiKey}\"]}"),
                    "GenerateStringKey": "generated",
                    "PasswordLength": 16,
                    "ExcludePunctuation": true,
                },
            }),
        )
        .policy("Delete"),
    );
    t.resource(
        "TokenSecret",
        Resource::new(
            "AWS::SecretsManager::Secret",
            json!({
                "Name": sub("${AWS::StackName}/token"),
                "Description": "Signs the execution-scoped WebSocket tokens the API hands out.",
                "GenerateSecretString": {
                    "SecretStringTemplate": "{}",
                    "GenerateStringKey": "token_secret",
                    "PasswordLength": 48,
                    "ExcludePunctuation": true,
                },
            }),
        )
        .policy("Delete"),
    );
    for (id, name) in [
        ("ForwarderDeadLetterQueue", "forwarder-failures"),
        ("CompletionDeadLetterQueue", "completion-failures"),
    ] {
        t.resource(
            id,
            Resource::new(
                "AWS::SQS::Queue",
                json!({
                    "QueueName": sub(&format!("${{AWS::StackName}}-{name}")),
                    "MessageRetentionPeriod": r("QueueRetentionSeconds"),
                    // Longer than the completion function's timeout: a record the janitor is
                    // handling is not handed to a second run meanwhile.
                    "VisibilityTimeout": 960,
                    "SqsManagedSseEnabled": true,
                }),
            )
            .policy("Delete"),
        );
    }
    for f in Function::ALL {
        let (id, bin) = (f.logical_id(), f.name());
        t.resource(
            format!("{id}LogGroup"),
            Resource::new(
                "AWS::Logs::LogGroup",
                json!({
                    "LogGroupName": sub(&format!("/aws/lambda/${{AWS::StackName}}-{bin}")),
                    "RetentionInDays": r("FunctionLogRetentionDays"),
                }),
            )
            .policy("Delete"),
        );
        t.resource(format!("{id}Role"), Resource::new("AWS::IAM::Role", json!({
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": bin, "PolicyDocument": {"Version": "2012-10-17", "Statement": permissions(f)}}],
        })));
        let mut properties = json!({
                    "FunctionName": sub(&format!("${{AWS::StackName}}-{bin}")),
                    "Runtime": "provided.al2023",
                    "Handler": "bootstrap",
                    "Architectures": [r("Architecture")],
                    "Code": {"S3Bucket": r("ArtifactsBucket"), "S3Key": r(&format!("{id}CodeKey"))},
                    "Role": att(&format!("{id}Role"), "Arn"),
                    "MemorySize": 256,
                    "Timeout": timeout(f),
                    "LoggingConfig": {"LogGroup": r(&format!("{id}LogGroup"))},
                    "Environment": {"Variables": environment(f)},
        });
        // The functions clients invoke at will: their concurrency can be capped (issue: a
        // client must not be able to use the account's whole concurrency).
        if matches!(f, Function::Api | Function::Websocket) {
            properties["ReservedConcurrentExecutions"] = if_(
                &format!("Reserve{id}Concurrency"),
                r(&format!("{id}ReservedConcurrency")),
                no_value(),
            );
        }
        t.resource(
            format!("{id}Function"),
            Resource::new("AWS::Lambda::Function", properties),
        );
    }
    for id in [Function::Forwarder, Function::Completion].map(Function::logical_id) {
        t.resource(format!("{id}EventInvokeConfig"), Resource::new("AWS::Lambda::EventInvokeConfig", json!({
            "FunctionName": r(&format!("{id}Function")),
            "Qualifier": "$LATEST",
            "MaximumRetryAttempts": 2,
            "DestinationConfig": {"OnFailure": {"Destination": att(&format!("{id}DeadLetterQueue"), "Arn")}},
        })));
    }
    t.resource(
        "ForwarderLogsPermission",
        Resource::new(
            "AWS::Lambda::Permission",
            json!({
                "FunctionName": r("ForwarderFunction"),
                "Action": "lambda:InvokeFunction",
                "Principal": "logs.amazonaws.com",
                "SourceAccount": r("AWS::AccountId"),
                "SourceArn": runner_group_arn(),
            }),
        ),
    );
    t.resource(
        "RunnerSubscriptionFilter",
        Resource::new(
            "AWS::Logs::SubscriptionFilter",
            json!({
                "LogGroupName": runner_group_name(),
                "FilterPattern": "",
                "DestinationArn": att("ForwarderFunction", "Arn"),
            }),
        )
        .after("ForwarderLogsPermission"),
    );
}

fn apis(t: &mut Template) {
    t.resource(
        "WebSocketApi",
        Resource::new(
            "AWS::ApiGatewayV2::Api",
            json!({
                "Name": sub("${AWS::StackName}-logs-websocket"),
                "ProtocolType": "WEBSOCKET",
                "RouteSelectionExpression": "$request.body.action",
            }),
        ),
    );
    t.resource("WebSocketIntegration", Resource::new("AWS::ApiGatewayV2::Integration", json!({
        "ApiId": r("WebSocketApi"),
        "IntegrationType": "AWS_PROXY",
        "IntegrationUri": sub("arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${WebsocketFunction.Arn}/invocations"),
    })));
    for (id, key) in [
        ("ConnectRoute", "$connect"),
        ("DisconnectRoute", "$disconnect"),
        ("DefaultRoute", "$default"),
    ] {
        t.resource(
            id,
            Resource::new(
                "AWS::ApiGatewayV2::Route",
                json!({
                    "ApiId": r("WebSocketApi"),
                    "RouteKey": key,
                    "AuthorizationType": "NONE",
                    "Target": sub("integrations/${WebSocketIntegration}"),
                }),
            ),
        );
    }
    t.resource(
        "WebSocketStage",
        Resource::new(
            "AWS::ApiGatewayV2::Stage",
            json!({
                "ApiId": r("WebSocketApi"),
                "StageName": "prod",
                "AutoDeploy": true,
                "DefaultRouteSettings": {"ThrottlingBurstLimit": 500, "ThrottlingRateLimit": 1000},
            }),
        )
        .after("ConnectRoute")
        .after("DisconnectRoute")
        .after("DefaultRoute"),
    );
    t.resource("WebSocketPermission", Resource::new("AWS::Lambda::Permission", json!({
        "FunctionName": r("WebsocketFunction"),
        "Action": "lambda:InvokeFunction",
        "Principal": "apigateway.amazonaws.com",
        "SourceArn": sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/*"),
    })));

    t.resource(
        "HttpApi",
        Resource::new(
            "AWS::ApiGatewayV2::Api",
            json!({
                "Name": sub("${AWS::StackName}-logs-http"),
                "ProtocolType": "HTTP",
            }),
        ),
    );
    t.resource(
        "HttpIntegration",
        Resource::new(
            "AWS::ApiGatewayV2::Integration",
            json!({
                "ApiId": r("HttpApi"),
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": att("ApiFunction", "Arn"),
                "PayloadFormatVersion": "2.0",
            }),
        ),
    );
    for (id, key) in [
        ("LogsRoute", "GET /api/v1/executions/{id}/logs"),
        ("StatusRoute", "GET /api/v1/executions/{id}"),
        ("ListRoute", "GET /api/v1/executions"),
        ("CompleteRoute", "POST /api/v1/executions/{id}/complete"),
        // The log page and its assets, served by the same function (runvoy-web).
        ("PageRoute", "GET /"),
        ("ExecutionPageRoute", "GET /executions/{id}"),
        ("AssetsRoute", "GET /assets/{file}"),
    ] {
        t.resource(
            id,
            Resource::new(
                "AWS::ApiGatewayV2::Route",
                json!({
                    "ApiId": r("HttpApi"),
                    "RouteKey": key,
                    "Target": sub("integrations/${HttpIntegration}"),
                }),
            ),
        );
    }
    t.resource(
        "HttpStage",
        Resource::new(
            "AWS::ApiGatewayV2::Stage",
            json!({
                "ApiId": r("HttpApi"),
                "StageName": "$default",
                "AutoDeploy": true,
                "DefaultRouteSettings": {"ThrottlingBurstLimit": 200, "ThrottlingRateLimit": 100},
            }),
        ),
    );
    t.resource("HttpPermission", Resource::new("AWS::Lambda::Permission", json!({
        "FunctionName": r("ApiFunction"),
        "Action": "lambda:InvokeFunction",
        "Principal": "apigateway.amazonaws.com",
        "SourceArn": sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*"),
    })));
}

/// A function's environment: what every function needs, and the secrets only where used.
fn environment(function: Function) -> Value {
    let mut v = json!({
        "RUNVOY_LOGS_TABLE": logs_table_name(),
        "RUNVOY_CONNECTIONS_TABLE": r("ConnectionsTable"),
        "RUNVOY_LOG_GROUP": runner_group_name(),
        "RUNVOY_STREAM_TEMPLATE": r("StreamTemplate"),
        "RUNVOY_RETENTION_DAYS": r("RetentionDays"),
        "RUNVOY_RUNNER_CONTAINER": r("RunnerContainerName"),
        "RUNVOY_COMPLETION_GRACE_SECONDS": r("CompletionGraceSeconds"),
        "RUNVOY_WEBSOCKET_URL": websocket_url("wss"),
        "RUNVOY_WEBSOCKET_ENDPOINT": websocket_url("https"),
    });
    if function == Function::Api {
        v["RUNVOY_SECRET_ARN"] = r("ApiSecret");
    }
    if matches!(function, Function::Api | Function::Websocket) {
        v["RUNVOY_TOKEN_SECRET_ARN"] = r("TokenSecret");
    }
    if function == Function::Completion {
        // The janitor re-drives both on-failure queues.
        v["RUNVOY_COMPLETION_QUEUE_URL"] = r("CompletionDeadLetterQueue");
        v["RUNVOY_FORWARDER_QUEUE_URL"] = r("ForwarderDeadLetterQueue");
    }
    v
}

fn completion_rule(t: &mut Template) {
    // Only tasks with the runner container: other tasks in the account stop too.
    let detail = |cluster: Option<Value>| {
        let mut d =
            json!({"lastStatus": ["STOPPED"], "containers": {"name": [r("RunnerContainerName")]}});
        if let Some(c) = cluster {
            d["clusterArn"] = json!([c]);
        }
        json!({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"], "detail": d})
    };
    t.resource(
        "TaskStoppedRule",
        Resource::new(
            "AWS::Events::Rule",
            json!({
                "Description": "Completes an execution when its ECS task stops.",
                "EventPattern": if_("AnyCluster", detail(None), detail(Some(r("EcsClusterArn")))),
                "State": "ENABLED",
                "Targets": [{"Arn": att("CompletionFunction", "Arn"), "Id": "completion"}],
            }),
        ),
    );
    // The janitor: the completion function, every five minutes, re-drives what Lambda gave up
    // on (the on-failure queues), so no execution stays RUNNING for want of an attempt.
    t.resource(
        "JanitorSchedule",
        Resource::new(
            "AWS::Events::Rule",
            json!({
                "Description": "Re-drives the on-failure queues: completions and forwarder batches whose every attempt failed.",
                "ScheduleExpression": "rate(5 minutes)",
                "State": "ENABLED",
                "Targets": [{"Arn": att("CompletionFunction", "Arn"), "Id": "janitor"}],
            }),
        ),
    );
    t.resource(
        "JanitorPermission",
        Resource::new(
            "AWS::Lambda::Permission",
            json!({
                "FunctionName": r("CompletionFunction"),
                "Action": "lambda:InvokeFunction",
                "Principal": "events.amazonaws.com",
                "SourceArn": att("JanitorSchedule", "Arn"),
            }),
        ),
    );
    t.resource(
        "CompletionPermission",
        Resource::new(
            "AWS::Lambda::Permission",
            json!({
                "FunctionName": r("CompletionFunction"),
                "Action": "lambda:InvokeFunction",
                "Principal": "events.amazonaws.com",
                "SourceArn": att("TaskStoppedRule", "Arn"),
            }),
        ),
    );
}

fn alarms(t: &mut Template) {
    let actions = if_("HasAlarmTopic", json!([r("AlarmTopicArn")]), no_value());
    let alarm = |description: &str,
                 namespace: &str,
                 metric: &str,
                 dims: Value,
                 threshold: u32,
                 period: u32| {
        json!({
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": dims,
            "Statistic": "Sum",
            "Period": period,
            "EvaluationPeriods": 1,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": actions,
        })
    };
    let forwarder = json!([{"Name": "FunctionName", "Value": r("ForwarderFunction")}]);
    t.resource(
        "ForwarderErrorsAlarm",
        Resource::new(
            "AWS::CloudWatch::Alarm",
            alarm(
                "The forwarder failed invocations (they are retried, then queued for inspection).",
                "AWS/Lambda",
                "Errors",
                forwarder.clone(),
                1,
                60,
            ),
        ),
    );
    t.resource(
        "ForwarderThrottlesAlarm",
        Resource::new(
            "AWS::CloudWatch::Alarm",
            alarm(
                "The forwarder was throttled by Lambda.",
                "AWS/Lambda",
                "Throttles",
                forwarder,
                1,
                60,
            ),
        ),
    );
    t.resource("DeadLetterAlarm", Resource::new("AWS::CloudWatch::Alarm", {
        let mut a = alarm("Subscription batches the forwarder gave up on are waiting; reconciliation recovers their lines, inspect the cause.",
            "AWS/SQS", "ApproximateNumberOfMessagesVisible",
            json!([{"Name": "QueueName", "Value": att("ForwarderDeadLetterQueue", "QueueName")}]), 1, 300);
        a["Statistic"] = json!("Maximum");
        a
    }));
    t.resource("CompletionFailuresAlarm", Resource::new("AWS::CloudWatch::Alarm", {
        let mut a = alarm("An execution could not be completed after every retry; the janitor re-drives it every 5 minutes (its followers wait meanwhile). If it stays, inspect the queued event, and complete the execution with POST /api/v1/executions/{id}/complete.",
            "AWS/SQS", "ApproximateNumberOfMessagesVisible",
            json!([{"Name": "QueueName", "Value": att("CompletionDeadLetterQueue", "QueueName")}]), 1, 300);
        a["Statistic"] = json!("Maximum");
        a
    }));
    // A line readable only after completion's final re-read got an index past `final_index`:
    // followers that exited did not print it. Raise CompletionGraceSeconds.
    t.resource("LateLinesAlarm", Resource::new("AWS::CloudWatch::Alarm", alarm(
        "Lines became readable after their execution was completed (past final_index, so followers that exited did not print them): CloudWatch ingested them later than CompletionGraceSeconds after the task stopped; raise it.",
        "runvoy", "events_after_completion", json!([{"Name": "function", "Value": "forwarder"}]), 1, 300)));
    t.resource("AppendRetriesAlarm", Resource::new("AWS::CloudWatch::Alarm", alarm(
        "Appends are retrying a lot: one execution is written faster than its partition allows.",
        "runvoy", "transaction_retries", json!([{"Name": "function", "Value": "forwarder"}]), 500, 300)));
}

fn outputs(t: &mut Template) {
    t.output(
        "ApiUrl",
        sub("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"),
        "Base URL of the HTTP API (runvoy --api-url).",
    );
    t.output(
        "WebSocketUrl",
        websocket_url("wss"),
        "WebSocket endpoint clients are sent to.",
    );
    t.output(
        "LogsTableName",
        logs_table_name(),
        "The execution-logs table.",
    );
    t.output(
        "ConnectionsTableName",
        r("ConnectionsTable"),
        "The WebSocket connections table.",
    );
    t.output(
        "RunnerLogGroup",
        runner_group_name(),
        "Log group executions write to.",
    );
    t.output(
        "ApiSecretArn",
        r("ApiSecret"),
        "Secret holding the API keys.",
    );
    t.output(
        "ForwarderDeadLetterQueueUrl",
        r("ForwarderDeadLetterQueue"),
        "Where failed subscription batches wait.",
    );
    t.output(
        "CompletionDeadLetterQueueUrl",
        r("CompletionDeadLetterQueue"),
        "Where task stops that could not be completed wait.",
    );
}

/// The backend template.
pub fn backend() -> Template {
    let mut t = Template {
        description:
            "runvoy log streaming: exactly-once indexed execution logs, streamed over WebSocket."
                .into(),
        ..Template::default()
    };
    parameters(&mut t);
    conditions(&mut t);
    tables(&mut t);
    functions(&mut t);
    apis(&mut t);
    completion_rule(&mut t);
    alarms(&mut t);
    outputs(&mut t);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `v` with `{"Ref": name}` replaced by the parameter's value.
    fn with_params(v: &Value, params: &[(&str, &str)]) -> Value {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("Ref") => {
                let name = m["Ref"].as_str().unwrap();
                params
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map_or_else(|| v.clone(), |(_, val)| json!(val))
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), with_params(x, params)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| with_params(x, params)).collect()),
            _ => v.clone(),
        }
    }

    #[test]
    fn the_completion_rule_matches_only_runner_tasks_with_or_without_a_cluster() {
        let t = backend().to_value();
        let pattern = &t["Resources"]["TaskStoppedRule"]["Properties"]["EventPattern"]["Fn::If"];
        let cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/jobs";
        let params = [
            ("RunnerContainerName", "runner"),
            ("EcsClusterArn", cluster),
        ];
        let (any, one) = (
            with_params(&pattern[1], &params),
            with_params(&pattern[2], &params),
        );
        let task = |containers: &[&str], cluster: &str| {
            json!({"source": "aws.ecs", "detail-type": "ECS Task State Change",
                "detail": {"lastStatus": "STOPPED", "clusterArn": cluster,
                    "containers": containers.iter().map(|n| json!({"name": n, "exitCode": 0})).collect::<Vec<_>>()}})
        };
        let m = |p: &Value, e: &Value| runvoy_sim::events::matches(p, e).unwrap();
        for p in [&any, &one] {
            assert!(m(p, &task(&["runner", "sidecar"], cluster)));
            assert!(
                !m(p, &task(&["web"], cluster)),
                "another service's task in the account is not an execution"
            );
        }
        assert!(m(
            &any,
            &task(
                &["runner"],
                "arn:aws:ecs:us-east-1:123456789012:cluster/other"
            )
        ));
        assert!(!m(
            &one,
            &task(
                &["runner"],
                "arn:aws:ecs:us-east-1:123456789012:cluster/other"
            )
        ));
    }
}
