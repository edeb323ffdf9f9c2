//! EventBridge, emulated for the template's rules: an event is matched against each enabled
//! rule's `EventPattern` (literal values, `prefix`, `anything-but`, `exists`, nested objects) and
//! delivered to the rule's Lambda targets as an asynchronous invocation; a rule with a
//! `rate(…)` schedule sends its targets a "Scheduled Event" at each period. Lambda keeps accepted
//! asynchronous invocations until they are settled: the sim keeps them in its state directory,
//! so one that a restart interrupts is run again when the sim starts.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::lambda::{AsyncConfig, Function, now_ms, rfc3339, uuid_like};

/// One enabled rule and its Lambda targets: an event pattern, or a schedule.
pub struct Rule {
    pub name: String,
    pub arn: String,
    pub pattern: Value,
    /// `ScheduleExpression: rate(…)`: the rule fires a "Scheduled Event" this often.
    pub schedule: Option<std::time::Duration>,
    pub targets: Vec<(Arc<Function>, AsyncConfig)>,
}

/// The period of `rate(N minute|minutes|hour|hours|day|days)`; `Err` for what the sim does not
/// evaluate (cron expressions).
pub fn rate(expression: &str) -> Result<std::time::Duration, String> {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("the sim plays rate(…) schedules only, not {expression}"))?;
    let (n, unit) = inner
        .split_once(' ')
        .ok_or_else(|| format!("{expression} is not rate(N unit)"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{expression} is not rate(N unit)"))?;
    let secs = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3_600,
        "day" | "days" => 86_400,
        other => return Err(format!("{expression}: unknown unit {other}")),
    };
    Ok(std::time::Duration::from_secs(n * secs))
}

pub struct EventBus {
    pub rules: Vec<Rule>,
    pub account: String,
    pub region: String,
    /// Accepted, unsettled invocations: `<uuid>.json` holding `{"function", "payload"}`.
    pub pending: std::path::PathBuf,
}

impl EventBus {
    /// Puts one event (`PutEvents` entry) on the bus; returns the rules it matched.
    pub fn put(
        &self,
        source: &str,
        detail_type: &str,
        resources: Vec<String>,
        detail: Value,
    ) -> Vec<String> {
        let event = json!({
            "version": "0",
            "id": uuid_like(),
            "detail-type": detail_type,
            "source": source,
            "account": self.account,
            "time": rfc3339(now_ms()).split('.').next().unwrap_or_default().to_string() + "Z",
            "region": self.region,
            "resources": resources,
            "detail": detail,
        });
        let mut matched = Vec::new();
        for rule in self.rules.iter().filter(|r| r.schedule.is_none()) {
            if matches(&rule.pattern, &event).unwrap_or(false) {
                matched.push(rule.name.clone());
                for (f, config) in &rule.targets {
                    self.invoke(f.clone(), config.clone(), event.to_string().into_bytes());
                }
            }
        }
        matched
    }

    /// Fires the scheduled rules (all, or the one named) now, as EventBridge does at each
    /// period: a "Scheduled Event" to every target. Returns the rules fired.
    pub fn fire_schedules(&self, only: Option<&str>) -> Vec<String> {
        let mut fired = Vec::new();
        for rule in self.rules.iter().filter(|r| r.schedule.is_some()) {
            if only.is_some_and(|n| n != rule.name) {
                continue;
            }
            let event = json!({
                "version": "0",
                "id": uuid_like(),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": self.account,
                "time": rfc3339(now_ms()).split('.').next().unwrap_or_default().to_string() + "Z",
                "region": self.region,
                "resources": [rule.arn],
                "detail": {},
            });
            for (f, config) in &rule.targets {
                self.invoke(f.clone(), config.clone(), event.to_string().into_bytes());
            }
            fired.push(rule.name.clone());
        }
        fired
    }

    /// An asynchronous invocation, kept on disk until it is settled.
    fn invoke(&self, f: Arc<Function>, config: AsyncConfig, payload: Vec<u8>) {
        let file = self.pending.join(format!("{}.json", uuid_like()));
        let record = json!({"function": f.spec.arn, "payload": String::from_utf8_lossy(&payload)});
        let _ = std::fs::create_dir_all(&self.pending);
        if let Err(e) = std::fs::write(&file, record.to_string()) {
            eprintln!(
                "sim: cannot keep an asynchronous invocation in {}: {e}",
                file.display()
            );
        }
        tokio::spawn(async move {
            let _ = f.invoke_async(payload, config).await;
            let _ = std::fs::remove_file(&file);
        });
    }

    /// Runs again the invocations a stop interrupted; returns how many.
    pub fn resume_pending(&self) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(&self.pending)
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let Ok(v) = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            else {
                continue;
            };
            let _ = std::fs::remove_file(&path);
            let target = self
                .rules
                .iter()
                .flat_map(|r| &r.targets)
                .find(|(f, _)| v["function"].as_str() == Some(f.spec.arn.as_str()));
            if let (Some((f, config)), Some(payload)) = (target, v["payload"].as_str()) {
                self.invoke(f.clone(), config.clone(), payload.as_bytes().to_vec());
                n += 1;
            }
        }
        n
    }
}

/// Whether `event` matches `pattern`; `Err` names an operator the sim does not evaluate.
pub fn matches(pattern: &Value, event: &Value) -> Result<bool, String> {
    let Some(fields) = pattern.as_object() else {
        return Err(format!("an event pattern must be an object: {pattern}"));
    };
    for (key, want) in fields {
        let got = event.get(key);
        let ok = match want {
            // Arrays of objects are flattened, as EventBridge does: any element may match.
            Value::Object(_) => match got {
                Some(g @ Value::Object(_)) => matches(want, g)?,
                Some(Value::Array(items)) => {
                    let mut any = false;
                    for i in items.iter().filter(|i| i.is_object()) {
                        any |= matches(want, i)?;
                    }
                    any
                }
                _ => false,
            },
            Value::Array(options) => {
                let mut any = false;
                for o in options {
                    any |= matches_one(o, got)?;
                }
                any
            }
            other => {
                return Err(format!(
                    "pattern field {key} must be a list or object: {other}"
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn matches_one(option: &Value, got: Option<&Value>) -> Result<bool, String> {
    let values: Vec<&Value> = match got {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    };
    let Some(op) = option.as_object() else {
        return Ok(values.contains(&option));
    };
    let (name, arg) = op
        .iter()
        .next()
        .ok_or("an empty matcher object in an event pattern")?;
    match name.as_str() {
        "prefix" => {
            let p = arg.as_str().ok_or("prefix takes a string")?;
            Ok(values
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.starts_with(p))))
        }
        "exists" => Ok(arg.as_bool().ok_or("exists takes a boolean")? == got.is_some()),
        "anything-but" => {
            let excluded: Vec<&Value> = match arg {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            Ok(!values.is_empty() && values.iter().all(|v| !excluded.contains(v)))
        }
        other => Err(format!(
            "the sim cannot evaluate the event pattern operator {other}"
        )),
    }
}

/// Checks that every operator in a pattern is one the sim evaluates.
pub fn validate(pattern: &Value) -> Result<(), String> {
    matches(pattern, &json!({})).map(|_| ())?;
    fn walk(v: &Value) -> Result<(), String> {
        match v {
            Value::Object(m) => m.values().try_for_each(walk),
            Value::Array(a) => a.iter().try_for_each(|o| matches_one(o, None).map(|_| ())),
            _ => Ok(()),
        }
    }
    walk(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_task_patterns_match_like_eventbridge() {
        let pattern = json!({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"lastStatus": ["STOPPED"], "containers": {"name": ["runner"]}}});
        let event = |status: &str, name: &str| {
            json!({"source": "aws.ecs", "detail-type": "ECS Task State Change",
                "detail": {"lastStatus": status, "containers": [{"name": name, "exitCode": 0}]}})
        };
        assert!(
            matches(&pattern, &event("STOPPED", "runner")).unwrap(),
            "a nested pattern reaches into a list of objects"
        );
        assert!(!matches(&pattern, &event("STOPPED", "sidecar")).unwrap());
        let pattern = json!({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"lastStatus": ["STOPPED"]}});
        assert!(matches(&pattern, &event("STOPPED", "runner")).unwrap());
        assert!(!matches(&pattern, &event("RUNNING", "runner")).unwrap());
        let p = json!({"detail": {"clusterArn": [{"prefix": "arn:aws:ecs:"}], "group": [{"exists": false}]}});
        assert!(matches(&p, &json!({"detail": {"clusterArn": "arn:aws:ecs:x"}})).unwrap());
        assert!(
            !matches(
                &p,
                &json!({"detail": {"clusterArn": "arn:aws:ecs:x", "group": "g"}})
            )
            .unwrap()
        );
        let p = json!({"source": [{"anything-but": ["aws.ecs"]}]});
        assert!(!matches(&p, &json!({"source": "aws.ecs"})).unwrap());
        assert!(validate(&json!({"a": [{"numeric": [">", 1]}]})).is_err());
        assert!(validate(&pattern).is_ok());
    }
}
