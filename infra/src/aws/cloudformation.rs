//! Applying the template: change sets, stack events as progress, failures by resource, outputs.

use std::collections::HashSet;
use std::time::Duration;

use super::readable;
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, ChangeSetType, Parameter, StackStatus};

/// What a change set would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    NoChanges,
    Changes {
        name: String,
        kind: ChangeSetType,
        changes: Vec<Change>,
    },
}

/// One resource a change set adds, modifies or removes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub action: String,
    pub resource: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    /// For a `Modify`: `True`, `Conditional` or `False` — whether CloudFormation replaces the
    /// resource (a replaced table loses its items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// For a `Modify`: the properties it changes (`GenerateSecretString`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<8} {:<34} {}",
            self.action, self.resource, self.resource_type
        )?;
        match self.replacement.as_deref() {
            Some("True") => write!(f, " (replaced)"),
            Some("Conditional") => write!(f, " (may be replaced)"),
            _ => Ok(()),
        }
    }
}

pub struct Stacks {
    pub client: Client,
    pub name: String,
    /// A service role CloudFormation creates, updates and deletes the stack's resources with
    /// (`--role-arn`): the caller then needs no rights on the resources themselves.
    pub role_arn: Option<String>,
}

/// Largest template CloudFormation takes inline (`TemplateBody`); a larger one is uploaded to
/// S3 and passed as `TemplateURL` (up to 1 MB).
pub const TEMPLATE_BODY_MAX: usize = 51_200;

/// Where a change set's template comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Body(&'a str),
    Url(&'a str),
}

fn param(key: &str, value: Option<&str>) -> Parameter {
    let p = Parameter::builder().parameter_key(key);
    match value {
        Some(v) => p.parameter_value(v).build(),
        None => p.use_previous_value(true).build(),
    }
}

impl Stacks {
    /// The stack's status, `None` when it does not exist (or is gone).
    pub async fn status(&self) -> anyhow::Result<Option<StackStatus>> {
        match self
            .client
            .describe_stacks()
            .stack_name(&self.name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .stacks()
                .first()
                .and_then(|s| s.stack_status().cloned())
                .filter(|s| {
                    !matches!(
                        s,
                        StackStatus::DeleteComplete | StackStatus::ReviewInProgress
                    )
                })),
            Err(e)
                if e.to_string().contains("does not exist")
                    || format!("{e:?}").contains("does not exist") =>
            {
                Ok(None)
            }
            Err(e) => Err(readable(&format!("describing stack {}", self.name), e)),
        }
    }

    pub async fn outputs(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .described("outputs")
            .await?
            .map(|s| {
                s.outputs()
                    .iter()
                    .map(|o| pair(o.output_key(), o.output_value()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The stack as `DescribeStacks` shows it; `what` says what it is read for, in an error.
    async fn described(
        &self,
        what: &str,
    ) -> anyhow::Result<Option<aws_sdk_cloudformation::types::Stack>> {
        let out = self
            .client
            .describe_stacks()
            .stack_name(&self.name)
            .send()
            .await
            .map_err(|e| readable(&format!("reading the {what} of stack {}", self.name), e))?;
        Ok(out.stacks.unwrap_or_default().into_iter().next())
    }

    /// Creates a change set and waits for it; `previous` names parameters to keep as they are.
    pub async fn plan(
        &self,
        template: Source<'_>,
        params: &[(String, Option<String>)],
    ) -> anyhow::Result<Plan> {
        let kind = match self.status().await? {
            None => ChangeSetType::Create,
            Some(_) => ChangeSetType::Update,
        };
        let name = format!(
            "deploy-{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
            runvoy_runtime::random_hex(4)
        );
        let created = self
            .client
            .create_change_set()
            .stack_name(&self.name)
            .change_set_name(&name)
            .change_set_type(kind.clone())
            .set_template_body(match template {
                Source::Body(b) => Some(b.to_string()),
                Source::Url(_) => None,
            })
            .set_template_url(match template {
                Source::Url(u) => Some(u.to_string()),
                Source::Body(_) => None,
            })
            .set_parameters(Some(
                params.iter().map(|(k, v)| param(k, v.as_deref())).collect(),
            ))
            .capabilities(Capability::CapabilityIam)
            .set_role_arn(self.role_arn.clone())
            .send()
            .await
            .map_err(|e| readable(&format!("creating a change set for stack {}", self.name), e))?;
        // Address the change set by its ARN from here on: names are only unique per stack.
        let name = created.id().map(str::to_string).unwrap_or(name);
        for _ in 0..600 {
            let cs = self
                .client
                .describe_change_set()
                .stack_name(&self.name)
                .change_set_name(&name)
                .send()
                .await
                .map_err(|e| readable(&format!("reading change set {name}"), e))?;
            let status = cs
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            match status.as_str() {
                "CREATE_COMPLETE" => {
                    let changes = cs
                        .changes()
                        .iter()
                        .filter_map(|c| c.resource_change())
                        .map(|rc| Change {
                            action: rc.action().map_or("?", |a| a.as_str()).to_string(),
                            resource: rc.logical_resource_id().unwrap_or("?").to_string(),
                            resource_type: rc.resource_type().unwrap_or("?").to_string(),
                            replacement: rc.replacement().map(|r| r.as_str().to_string()),
                            properties: rc
                                .details()
                                .iter()
                                .filter_map(|d| d.target().and_then(|t| t.name()))
                                .map(str::to_string)
                                .collect(),
                        })
                        .collect();
                    return Ok(Plan::Changes {
                        name,
                        kind,
                        changes,
                    });
                }
                "FAILED" => {
                    let reason = cs.status_reason().unwrap_or_default().to_string();
                    let _ = self
                        .client
                        .delete_change_set()
                        .stack_name(&self.name)
                        .change_set_name(&name)
                        .send()
                        .await;
                    if kind == ChangeSetType::Create {
                        // A first change set that failed leaves an empty stack in REVIEW_IN_PROGRESS.
                        let _ = self
                            .client
                            .delete_stack()
                            .stack_name(&self.name)
                            .send()
                            .await;
                    }
                    if reason.contains("didn't contain changes") || reason.contains("No updates") {
                        return Ok(Plan::NoChanges);
                    }
                    anyhow::bail!("the change set failed: {reason}");
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        anyhow::bail!("the change set did not become ready in 5 minutes")
    }

    pub async fn discard(&self, change_set: &str) -> anyhow::Result<()> {
        self.client
            .delete_change_set()
            .stack_name(&self.name)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| readable(&format!("discarding change set {change_set}"), e))?;
        Ok(())
    }

    /// Executes a change set and streams stack events until the stack settles.
    pub async fn apply(&self, change_set: &str) -> anyhow::Result<()> {
        let known = self.event_ids().await;
        let executed = self
            .client
            .execute_change_set()
            .stack_name(&self.name)
            .change_set_name(change_set)
            .send()
            .await;
        if let Err(e) = executed {
            let failures = self.failed_resources(&known).await.unwrap_or_default();
            let e = readable(
                &format!("executing the change set of stack {}", self.name),
                e,
            );
            anyhow::bail!("{e}{}", failure_list(&failures));
        }
        self.follow(known, false).await
    }

    pub async fn delete(&self) -> anyhow::Result<()> {
        let known = self.event_ids().await;
        self.client
            .delete_stack()
            .stack_name(&self.name)
            .set_role_arn(self.role_arn.clone())
            .send()
            .await
            .map_err(|e| readable(&format!("deleting stack {}", self.name), e))?;
        self.follow(known, true).await
    }

    /// The ids of the stack's events now (the newest page): what happened before an operation.
    async fn event_ids(&self) -> HashSet<String> {
        match self
            .client
            .describe_stack_events()
            .stack_name(&self.name)
            .send()
            .await
        {
            Ok(out) => out
                .stack_events()
                .iter()
                .filter_map(|e| e.event_id().map(str::to_string))
                .collect(),
            Err(_) => HashSet::new(),
        }
    }

    /// `resource: reason` of every resource that failed in the events not in `known`.
    async fn failed_resources(&self, known: &HashSet<String>) -> anyhow::Result<Vec<String>> {
        let events = self
            .client
            .describe_stack_events()
            .stack_name(&self.name)
            .send()
            .await
            .map_err(|e| readable(&format!("reading the events of stack {}", self.name), e))?;
        Ok(events
            .stack_events()
            .iter()
            .filter(|e| !known.contains(e.event_id().unwrap_or_default()))
            .filter(|e| {
                e.resource_status()
                    .is_some_and(|s| s.as_str().ends_with("_FAILED"))
            })
            .map(|e| {
                format!(
                    "{}: {}",
                    e.logical_resource_id().unwrap_or("?"),
                    e.resource_status_reason().unwrap_or("")
                )
            })
            .collect())
    }

    /// Prints the operation's stack events until the stack itself reports how it ended;
    /// fails naming each failed resource.
    ///
    /// Only an event of the stack itself that was not there before the operation (`known`)
    /// says it ended: right after `ExecuteChangeSet` or `DeleteStack`, `DescribeStacks` can
    /// still show the status from before (a stale `UPDATE_COMPLETE`, `ROLLBACK_COMPLETE`, or
    /// no stack yet in `REVIEW_IN_PROGRESS`), so a status alone is never trusted — except a
    /// deleted stack's absence.
    async fn follow(&self, known: HashSet<String>, deleting: bool) -> anyhow::Result<()> {
        let mut seen = known;
        let mut failures = Vec::new();
        for _ in 0..3_600 {
            let mut ended: Option<String> = None;
            match self
                .client
                .describe_stack_events()
                .stack_name(&self.name)
                .send()
                .await
            {
                Ok(events) => {
                    let mut fresh: Vec<_> = events
                        .stack_events()
                        .iter()
                        .filter(|e| seen.insert(e.event_id().unwrap_or_default().to_string()))
                        .cloned()
                        .collect();
                    fresh.reverse();
                    for e in fresh {
                        let status = e.resource_status().map(|s| s.as_str()).unwrap_or("");
                        let reason = e.resource_status_reason().unwrap_or("");
                        let resource = e.logical_resource_id().unwrap_or("");
                        eprintln!("  {status:<22} {resource:<34} {reason}");
                        if status.ends_with("_FAILED") {
                            failures.push(format!("{resource}: {reason}"));
                        }
                        if resource == self.name && settled(status) {
                            ended = Some(status.to_string());
                        }
                    }
                }
                // A deleted stack's events are no longer found by its name.
                Err(_) if deleting => {}
                Err(e) => {
                    return Err(readable(
                        &format!("reading the events of stack {}", self.name),
                        e,
                    ));
                }
            }
            if deleting && self.status().await?.is_none() {
                return Ok(());
            }
            if let Some(s) = ended {
                if matches!(
                    s.as_str(),
                    "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE"
                ) || (deleting && s == "DELETE_COMPLETE")
                {
                    return Ok(());
                }
                anyhow::bail!("the stack ended in {s}{}", failure_list(&failures));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        anyhow::bail!("the stack did not settle within an hour")
    }
}

/// A key and its value as the SDK gives them (absent: empty).
fn pair(key: Option<&str>, value: Option<&str>) -> (String, String) {
    (
        key.unwrap_or_default().to_string(),
        value.unwrap_or_default().to_string(),
    )
}

/// Whether a status of the stack itself ends an operation.
fn settled(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
        && (status.ends_with("_COMPLETE") || status.ends_with("_FAILED"))
}

impl Stacks {
    /// The stack's parameters as deployed (`NoEcho` ones masked).
    pub async fn parameters(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .described("parameters")
            .await?
            .map(|s| {
                s.parameters()
                    .iter()
                    .map(|p| pair(p.parameter_key(), p.parameter_value()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The status as CloudFormation says it, `REVIEW_IN_PROGRESS` included (a stack whose
    /// first change set was made and never run: it has no resources, only a name).
    pub async fn raw_status(&self) -> anyhow::Result<Option<StackStatus>> {
        match self
            .client
            .describe_stacks()
            .stack_name(&self.name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .stacks()
                .first()
                .and_then(|s| s.stack_status().cloned())
                .filter(|s| *s != StackStatus::DeleteComplete)),
            Err(e)
                if e.to_string().contains("does not exist")
                    || format!("{e:?}").contains("does not exist") =>
            {
                Ok(None)
            }
            Err(e) => Err(readable(&format!("describing stack {}", self.name), e)),
        }
    }
}

/// What `up` can do with a stack in a given state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Update,
    /// Its creation failed: it can only be deleted (and created again).
    Recreate,
    /// Nothing now; the sentence says why and what to do.
    Refuse(String),
}

pub fn next_step(stack: &str, env: &str, status: &StackStatus) -> Next {
    let s = status.as_str();
    match status {
        // IMPORT_ROLLBACK_COMPLETE is an existing stack whose import was undone: updatable.
        StackStatus::RollbackComplete
        | StackStatus::RollbackFailed
        | StackStatus::DeleteFailed
        | StackStatus::CreateFailed => Next::Recreate,
        StackStatus::UpdateRollbackFailed => Next::Refuse(format!(
            "stack {stack} is in UPDATE_ROLLBACK_FAILED: CloudFormation could not roll back its last update; finish the rollback (aws cloudformation continue-update-rollback --stack-name {stack}), then run `deploy up --env {env}` again"
        )),
        _ if s.ends_with("_IN_PROGRESS") => Next::Refuse(format!(
            "stack {stack} is busy ({s}); wait until `deploy status --env {env}` shows it settled, then run `deploy up --env {env}` again"
        )),
        _ => Next::Update,
    }
}

/// Resources whose replacement or removal loses data: stored log lines, the executions' log
/// streams, the API keys.
pub const STATEFUL: [&str; 4] = [
    "LogsTable",
    "RetainedLogsTable",
    "RunnerLogGroup",
    "ApiSecret",
];

/// What of [`STATEFUL`] `changes` replace or remove, as "replace LogsTable" phrases. A change
/// of the key secret's `GenerateSecretString` is one too, though CloudFormation does it in
/// place: it generates a new value, which wipes the keys `rotate-key` added and brings the
/// creation key back.
pub fn data_lost(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| STATEFUL.contains(&c.resource.as_str()))
        .filter_map(|c| match (c.action.as_str(), c.replacement.as_deref()) {
            ("Remove", _) => Some(format!("remove {}", c.resource)),
            ("Modify", Some("True" | "Conditional")) => Some(format!("replace {}", c.resource)),
            ("Modify", _) if c.properties.iter().any(|p| p == "GenerateSecretString") => {
                Some(format!("regenerate the value of {} (its keys)", c.resource))
            }
            _ => None,
        })
        .collect()
}

/// The sentence for a stack that can only be recreated.
pub fn recreate_advice(stack: &str, env: &str, status: &StackStatus) -> String {
    format!(
        "stack {stack} is in {}: its creation failed and CloudFormation cannot update it; see why with `deploy status --env {env}`, then run `deploy up --env {env} --recreate` (or `deploy down --env {env}` and `up` again)",
        status.as_str()
    )
}

fn failure_list(failures: &[String]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!("; failed resources:\n  {}", failures.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
    use aws_sdk_cloudformation::primitives::DateTime;
    use aws_sdk_cloudformation::types::{ResourceStatus, Stack, StackEvent};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn change(action: &str, resource: &str, replacement: Option<&str>) -> Change {
        Change {
            action: action.into(),
            resource: resource.into(),
            resource_type: "AWS::X".into(),
            replacement: replacement.map(str::to_string),
            properties: Vec::new(),
        }
    }

    /// moto's change sets list no resource changes for an update, so the refusal is shown here
    /// on the change sets CloudFormation describes.
    #[test]
    fn changes_that_lose_stored_data_are_named() {
        let changes = [
            change("Remove", "LogsTable", None),
            change("Add", "RetainedLogsTable", None),
            change("Modify", "ApiSecret", Some("True")),
            change("Modify", "RunnerLogGroup", Some("False")),
            change("Modify", "ApiFunction", Some("True")),
            change("Remove", "ForwarderDeadLetterQueue", None),
        ];
        assert_eq!(
            data_lost(&changes),
            ["remove LogsTable", "replace ApiSecret"],
            "a function or a queue holds nothing that would be lost"
        );
        assert!(data_lost(&[change("Modify", "LogsTable", Some("Conditional"))]).len() == 1);
        // The key secret changed in place, but its generator: a new value, the keys lost.
        let regenerate = Change {
            properties: vec!["GenerateSecretString".into()],
            ..change("Modify", "ApiSecret", Some("False"))
        };
        assert_eq!(
            data_lost(&[regenerate]),
            ["regenerate the value of ApiSecret (its keys)"]
        );
        let described = Change {
            properties: vec!["Description".into()],
            ..change("Modify", "ApiSecret", Some("False"))
        };
        assert!(data_lost(&[described]).is_empty());
    }
    fn event(id: &str, resource: &str, status: ResourceStatus, reason: &str) -> StackEvent {
        StackEvent::builder()
            .event_id(id)
            .stack_id("s")
            .stack_name("s")
            .logical_resource_id(resource)
            .resource_status(status)
            .resource_status_reason(reason)
            .timestamp(DateTime::from_secs(4_000_000_000))
            .build()
    }

    /// A page of `DescribeStackEvents`, newest first.
    fn page(list: Vec<StackEvent>) -> DescribeStackEventsOutput {
        DescribeStackEventsOutput::builder()
            .set_stack_events(Some(list))
            .build()
    }

    /// The stack `s` through a mocked client.
    fn stack_s(client: Client) -> Stacks {
        Stacks {
            client,
            name: "s".into(),
            role_arn: None,
        }
    }

    #[test]
    fn stacks_that_cannot_be_updated_say_what_to_do() {
        assert_eq!(
            next_step("s", "e", &StackStatus::UpdateComplete),
            Next::Update
        );
        assert_eq!(
            next_step("s", "e", &StackStatus::CreateComplete),
            Next::Update
        );
        assert_eq!(
            next_step("s", "e", &StackStatus::UpdateRollbackComplete),
            Next::Update
        );
        assert_eq!(
            next_step("s", "e", &StackStatus::RollbackComplete),
            Next::Recreate
        );
        assert_eq!(
            recreate_advice("runvoy-prod", "prod", &StackStatus::RollbackComplete),
            "stack runvoy-prod is in ROLLBACK_COMPLETE: its creation failed and CloudFormation cannot update it; see why with `deploy status --env prod`, then run `deploy up --env prod --recreate` (or `deploy down --env prod` and `up` again)"
        );
        assert_eq!(
            next_step("runvoy-prod", "prod", &StackStatus::UpdateInProgress),
            Next::Refuse("stack runvoy-prod is busy (UPDATE_IN_PROGRESS); wait until `deploy status --env prod` shows it settled, then run `deploy up --env prod` again".into())
        );
        assert_eq!(
            next_step("s", "e", &StackStatus::CreateFailed),
            Next::Recreate,
            "CloudFormation refuses to update a stack whose creation failed"
        );
        assert!(matches!(
            next_step("s", "e", &StackStatus::UpdateRollbackFailed),
            Next::Refuse(m) if m.contains("continue-update-rollback --stack-name s")
        ));
    }

    #[tokio::test]
    async fn a_rolled_back_stack_names_each_failed_resource_and_its_reason() {
        let execute = mock!(Client::execute_change_set)
            .then_output(|| ExecuteChangeSetOutput::builder().build());
        let stacks =
            mock!(Client::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
        let events = mock!(Client::describe_stack_events)
            .sequence()
            // Before the execution: the stack's earlier history.
            .output(|| page(vec![event("0", "s", ResourceStatus::CreateComplete, "")]))
            .output(|| {
                page(vec![
                    event("3", "s", ResourceStatus::RollbackComplete, ""),
                    event(
                        "2",
                        "LogsTable",
                        ResourceStatus::CreateFailed,
                        "runvoy-execution-logs already exists",
                    ),
                    event("1", "LogsTable", ResourceStatus::CreateInProgress, ""),
                    event("0", "s", ResourceStatus::CreateComplete, ""),
                ])
            })
            .repeatedly()
            .build();
        let client = mock_client!(
            aws_sdk_cloudformation,
            RuleMode::MatchAny,
            [&execute, &stacks, &events]
        );
        let err = stack_s(client).apply("cs").await.unwrap_err().to_string();
        assert!(err.contains("ROLLBACK_COMPLETE"), "{err}");
        assert!(
            err.contains("LogsTable: runvoy-execution-logs already exists"),
            "{err}"
        );
    }

    fn stack(status: StackStatus) -> DescribeStacksOutput {
        DescribeStacksOutput::builder()
            .stacks(
                Stack::builder()
                    .stack_name("s")
                    .stack_status(status)
                    .creation_time(DateTime::from_secs(0))
                    .build(),
            )
            .build()
    }

    /// Right after `ExecuteChangeSet`, `DescribeStacks` still says `UPDATE_COMPLETE` (the
    /// status from before): the update is followed until the stack's own event says how it
    /// ended — here, rolled back.
    #[tokio::test]
    async fn a_stale_status_after_execute_is_not_taken_for_the_end() {
        let execute = mock!(Client::execute_change_set)
            .then_output(|| ExecuteChangeSetOutput::builder().build());
        let stacks =
            mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
        let events = mock!(Client::describe_stack_events)
            .sequence()
            .output(|| page(vec![event("0", "s", ResourceStatus::UpdateComplete, "")]))
            .times(2)
            .output(|| {
                page(vec![
                    event("2", "s", ResourceStatus::UpdateInProgress, ""),
                    event("0", "s", ResourceStatus::UpdateComplete, ""),
                ])
            })
            .output(|| {
                page(vec![
                    event("4", "s", ResourceStatus::UpdateRollbackComplete, ""),
                    event("3", "ApiFunction", ResourceStatus::UpdateFailed, "bad code"),
                    event("2", "s", ResourceStatus::UpdateInProgress, ""),
                    event("0", "s", ResourceStatus::UpdateComplete, ""),
                ])
            })
            .repeatedly()
            .build();
        let client = mock_client!(
            aws_sdk_cloudformation,
            RuleMode::MatchAny,
            [&execute, &stacks, &events]
        );
        let err = stack_s(client).apply("cs").await.unwrap_err().to_string();
        assert!(
            err.contains("UPDATE_ROLLBACK_COMPLETE") && err.contains("ApiFunction: bad code"),
            "{err}"
        );
    }

    /// Right after `DeleteStack`, `DescribeStacks` still says `CREATE_COMPLETE`: `down` waits
    /// until the stack is gone.
    #[tokio::test]
    async fn a_delete_is_done_only_when_the_stack_is_gone() {
        use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
        use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError;
        let delete =
            mock!(Client::delete_stack).then_output(|| DeleteStackOutput::builder().build());
        let stacks = mock!(Client::describe_stacks)
            .sequence()
            .output(|| stack(StackStatus::CreateComplete))
            .times(2)
            .output(|| stack(StackStatus::DeleteInProgress))
            .error(|| {
                DescribeStacksError::generic(
                    aws_sdk_cloudformation::error::ErrorMetadata::builder()
                        .code("ValidationError")
                        .message("Stack with id s does not exist")
                        .build(),
                )
            })
            .repeatedly()
            .build();
        let events = mock!(Client::describe_stack_events)
            .then_output(|| page(vec![event("0", "s", ResourceStatus::CreateComplete, "")]));
        let client = mock_client!(
            aws_sdk_cloudformation,
            RuleMode::MatchAny,
            [&delete, &stacks, &events]
        );
        stack_s(client).delete().await.unwrap();
        assert_eq!(stacks.num_calls(), 4, "it waited past the stale statuses");
    }
}
