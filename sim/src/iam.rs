//! IAM policy evaluation as AWS does it for one role: an action on a resource is allowed when an
//! `Allow` statement matches both and no `Deny` statement does. The statements come from the
//! role's inline policies in the template; which `(action, resource)` each function really asked
//! for is recorded, so the sim can tell grants nobody used.
//!
//! [`checks`] turns one API request into the checks AWS makes for it: every action inside
//! `TransactWriteItems` is checked as its single-item action (`PutItem`, `UpdateItem`,
//! `DeleteItem`, `ConditionCheckItem`), each table of a batch separately.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::Value;

use crate::SimError;
use crate::template::{Place, Resolver, scalar};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// The permissions of one role.
#[derive(Debug)]
pub struct Policy {
    /// `arn:aws:sts::{account}:assumed-role/{role}/{session}`, for messages.
    pub principal: String,
    statements: Vec<Statement>,
    /// `(statement, action pattern, resource pattern)` that allowed at least one request.
    used: Mutex<BTreeSet<(usize, String, String)>>,
}

/// One permission check: an IAM action on a resource ARN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Check {
    pub action: String,
    pub resource: String,
}

impl Check {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Check {
        Check {
            action: action.into(),
            resource: resource.into(),
        }
    }
}

impl Policy {
    /// The inline policies of the role resource `role` (a logical id), evaluated.
    pub fn of_role(resolver: &Resolver, role: &str, session: &str) -> Result<Policy, SimError> {
        let props = resolver.properties(role)?;
        if props.get("ManagedPolicyArns").is_some() {
            return Err(SimError::Template(format!(
                "role {role} uses managed policies, which the sim cannot read; inline them"
            )));
        }
        let mut statements = Vec::new();
        for p in props["Policies"].as_array().into_iter().flatten() {
            for s in p["PolicyDocument"]["Statement"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for unsupported in ["NotAction", "NotResource", "Condition", "Principal"] {
                    if s.get(unsupported).is_some() {
                        return Err(SimError::Template(format!(
                            "role {role}: the sim cannot evaluate {unsupported} in a policy statement"
                        )));
                    }
                }
                statements.push(Statement {
                    allow: s["Effect"] == "Allow",
                    actions: strings(&s["Action"]),
                    resources: strings(&s["Resource"]),
                });
            }
        }
        let name = resolver.physical(role).unwrap_or(role);
        Ok(Policy {
            principal: format!(
                "arn:aws:sts::{}:assumed-role/{name}/{session}",
                resolver.place.account
            ),
            statements,
            used: Mutex::default(),
        })
    }

    /// A policy from statements given directly (tests).
    pub fn from_statements(principal: &str, statements: &Value) -> Policy {
        Policy {
            principal: principal.into(),
            statements: statements
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Statement {
                    allow: s["Effect"] == "Allow",
                    actions: strings(&s["Action"]),
                    resources: strings(&s["Resource"]),
                })
                .collect(),
            used: Mutex::default(),
        }
    }

    /// `Ok` when allowed; otherwise the message AWS gives.
    pub fn check(&self, c: &Check) -> Result<(), String> {
        fn matching<'s>(s: &'s Statement, c: &Check) -> Option<(&'s String, &'s String)> {
            let a = s
                .actions
                .iter()
                .find(|a| glob(&a.to_ascii_lowercase(), &c.action.to_ascii_lowercase()));
            let r = s.resources.iter().find(|r| glob(r, &c.resource));
            a.zip(r)
        }
        if self
            .statements
            .iter()
            .any(|s| !s.allow && matching(s, c).is_some())
        {
            return Err(format!(
                "User: {} is not authorized to perform: {} on resource: {} with an explicit deny",
                self.principal, c.action, c.resource
            ));
        }
        for (i, s) in self.statements.iter().enumerate().filter(|(_, s)| s.allow) {
            if let Some((a, r)) = matching(s, c) {
                self.used
                    .lock()
                    .expect("iam lock")
                    .insert((i, a.clone(), r.clone()));
                return Ok(());
            }
        }
        Err(format!(
            "User: {} is not authorized to perform: {} on resource: {} because no identity-based policy allows the {} action",
            self.principal, c.action, c.resource, c.action
        ))
    }

    /// Granted `action on resource` pairs that no request has needed so far.
    pub fn unused(&self) -> Vec<Check> {
        let used = self.used.lock().expect("iam lock");
        let mut out = Vec::new();
        for (i, s) in self.statements.iter().enumerate().filter(|(_, s)| s.allow) {
            for a in &s.actions {
                for r in &s.resources {
                    if !used.contains(&(i, a.clone(), r.clone())) {
                        out.push(Check::new(a.clone(), r.clone()));
                    }
                }
            }
        }
        out
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(scalar).collect(),
        Value::Null => Vec::new(),
        other => vec![scalar(other)],
    }
}

/// IAM wildcard match: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The checks AWS makes for one JSON-protocol request (`X-Amz-Target: {prefix}.{Operation}`).
/// `Err` names what the sim cannot evaluate (it is then refused, never let through).
pub fn checks(target: &str, body: &Value, place: &Place) -> Result<Vec<Check>, String> {
    let (prefix, op) = target
        .split_once('.')
        .ok_or_else(|| format!("unknown request target {target}"))?;
    let (r, a) = (&place.region, &place.account);
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    match prefix {
        p if p.starts_with("DynamoDB_") => {
            let table = |name: &str| {
                if name.starts_with("arn:") {
                    name.to_string()
                } else {
                    format!("arn:aws:dynamodb:{r}:{a}:table/{name}")
                }
            };
            let action = |x: &str| format!("dynamodb:{x}");
            match op {
                "TransactWriteItems" | "TransactGetItems" => {
                    let mut out = Vec::new();
                    for item in body["TransactItems"].as_array().into_iter().flatten() {
                        let (kind, inner) = item
                            .as_object()
                            .and_then(|m| m.iter().next())
                            .ok_or("a transaction item without an action")?;
                        let single = match kind.as_str() {
                            "Put" => "PutItem",
                            "Update" => "UpdateItem",
                            "Delete" => "DeleteItem",
                            "ConditionCheck" => "ConditionCheckItem",
                            "Get" => "GetItem",
                            other => return Err(format!("unknown transaction action {other}")),
                        };
                        let name = inner["TableName"].as_str().unwrap_or_default();
                        out.push(Check::new(action(single), table(name)));
                    }
                    Ok(out)
                }
                "BatchGetItem" | "BatchWriteItem" => Ok(body["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, _)| Check::new(action(op), table(name)))
                    .collect()),
                _ => {
                    let name =
                        text("TableName").ok_or_else(|| format!("{op} without TableName"))?;
                    let mut arn = table(&name);
                    if let Some(index) = text("IndexName") {
                        arn = format!("{arn}/index/{index}");
                    }
                    Ok(vec![Check::new(action(op), arn)])
                }
            }
        }
        p if p.starts_with("Logs_") => {
            let group = text("logGroupName")
                .or_else(|| text("logGroupIdentifier"))
                .ok_or_else(|| format!("logs:{op} without a log group"))?;
            let group_arn = if group.starts_with("arn:") {
                group.trim_end_matches(":*").to_string()
            } else {
                format!("arn:aws:logs:{r}:{a}:log-group:{group}")
            };
            let resource = match text("logStreamName") {
                Some(s) => format!("{group_arn}:log-stream:{s}"),
                None => format!("{group_arn}:*"),
            };
            Ok(vec![Check::new(format!("logs:{op}"), resource)])
        }
        "AmazonSQS" => {
            let url = text("QueueUrl").ok_or_else(|| format!("sqs:{op} without QueueUrl"))?;
            let mut path = url.trim_end_matches('/').rsplit('/');
            let (name, account) = (path.next().unwrap_or_default(), path.next().unwrap_or(a));
            Ok(vec![Check::new(
                format!("sqs:{op}"),
                format!("arn:aws:sqs:{r}:{account}:{name}"),
            )])
        }
        "secretsmanager" => {
            let id =
                text("SecretId").ok_or_else(|| format!("secretsmanager:{op} without SecretId"))?;
            let arn = if id.starts_with("arn:") {
                id
            } else {
                format!("arn:aws:secretsmanager:{r}:{a}:secret:{id}")
            };
            Ok(vec![Check::new(format!("secretsmanager:{op}"), arn)])
        }
        other => Err(format!("the sim's IAM gate cannot evaluate {other}.{op}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn place() -> Place {
        Place {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            stack_name: "s".into(),
        }
    }

    #[test]
    fn wildcards_match_like_iam() {
        assert!(glob("dynamodb:*", "dynamodb:getitem"));
        assert!(glob(
            "arn:aws:logs:r:a:log-group:/g:*",
            "arn:aws:logs:r:a:log-group:/g:log-stream:x"
        ));
        assert!(!glob(
            "arn:aws:logs:r:a:log-group:/g:*",
            "arn:aws:logs:r:a:log-group:/gx"
        ));
        assert!(glob("a?c", "abc") && !glob("a?c", "abbc"));
        assert!(glob("*", "") && glob("", "") && !glob("", "x"));
        assert!(
            glob("api/*", "api/*/POST/x"),
            "a literal '*' in the text is matched by the wildcard"
        );
    }

    #[test]
    fn sqs_calls_are_checked_on_the_queue_of_their_url() {
        let body = json!({"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/s-completion-failures"});
        assert_eq!(
            checks("AmazonSQS.ReceiveMessage", &body, &place()).unwrap(),
            vec![Check::new(
                "sqs:ReceiveMessage",
                "arn:aws:sqs:us-east-1:123456789012:s-completion-failures"
            )]
        );
        assert!(checks("AmazonSQS.ReceiveMessage", &json!({}), &place()).is_err());
    }

    #[test]
    fn transactions_are_checked_action_by_action() {
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "logs"}},
            {"Update": {"TableName": "logs"}},
            {"ConditionCheck": {"TableName": "other"}}]});
        let c = checks("DynamoDB_20120810.TransactWriteItems", &body, &place()).unwrap();
        let t = "arn:aws:dynamodb:us-east-1:123456789012:table/";
        assert_eq!(
            c,
            vec![
                Check::new("dynamodb:PutItem", format!("{t}logs")),
                Check::new("dynamodb:UpdateItem", format!("{t}logs")),
                Check::new("dynamodb:ConditionCheckItem", format!("{t}other")),
            ]
        );
        let policy = Policy::from_statements(
            "role",
            &json!([{"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:Query"], "Resource": [format!("{t}logs")]}]),
        );
        assert!(policy.check(&c[0]).is_ok());
        let denied = policy.check(&c[1]).unwrap_err();
        assert!(
            denied.contains("not authorized to perform: dynamodb:UpdateItem"),
            "{denied}"
        );
        assert!(policy.check(&c[2]).is_err(), "another table is refused");
        assert_eq!(
            policy.unused(),
            vec![Check::new("dynamodb:Query", format!("{t}logs"))],
            "what was never asked for is reported"
        );
    }

    #[test]
    fn deny_wins_and_unknown_services_are_refused() {
        let policy = Policy::from_statements(
            "role",
            &json!([
                {"Effect": "Allow", "Action": "logs:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "logs:GetLogEvents", "Resource": "*"}]),
        );
        let c = checks(
            "Logs_20140328.GetLogEvents",
            &json!({"logGroupName": "/g", "logStreamName": "s"}),
            &place(),
        )
        .unwrap();
        assert_eq!(
            c[0].resource,
            "arn:aws:logs:us-east-1:123456789012:log-group:/g:log-stream:s"
        );
        assert!(policy.check(&c[0]).unwrap_err().contains("explicit deny"));
        assert!(checks("AmazonSQS.SendMessage", &json!({}), &place()).is_err());
    }
}
