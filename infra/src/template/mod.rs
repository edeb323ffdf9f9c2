//! A typed model of the CloudFormation template and its deterministic rendering.
//! `cargo run -p deploy -- render` prints it; `deployments/cloudformation-backend.yaml` is the
//! checked-in copy (a test fails when it is stale).

mod backend;
mod iam;
mod names;
mod yaml;

use serde_json::{Map, Value, json};

pub use backend::backend;

/// One resource: type, properties and the attributes we use.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: &'static str,
    pub properties: Value,
    pub condition: Option<&'static str>,
    pub depends_on: Vec<&'static str>,
    /// `DeletionPolicy` and `UpdateReplacePolicy`.
    pub retain: Option<&'static str>,
}

impl Resource {
    pub fn new(kind: &'static str, properties: Value) -> Resource {
        Resource {
            kind,
            properties,
            condition: None,
            depends_on: Vec::new(),
            retain: None,
        }
    }

    pub fn when(mut self, condition: &'static str) -> Resource {
        self.condition = Some(condition);
        self
    }

    pub fn after(mut self, logical_id: &'static str) -> Resource {
        self.depends_on.push(logical_id);
        self
    }

    pub fn policy(mut self, policy: &'static str) -> Resource {
        self.retain = Some(policy);
        self
    }
}

/// The whole template, in the order it is written.
#[derive(Debug, Default)]
pub struct Template {
    pub description: String,
    pub parameters: Vec<(String, Value)>,
    pub conditions: Vec<(&'static str, Value)>,
    pub resources: Vec<(String, Resource)>,
    pub outputs: Vec<(&'static str, Value)>,
}

impl Template {
    pub fn parameter(&mut self, name: impl Into<String>, spec: Value) {
        self.parameters.push((name.into(), spec));
    }

    /// Checks a value for parameter `name` as CloudFormation will (`AllowedValues`,
    /// `AllowedPattern` over the whole value, `Number`), so that a bad value is refused before
    /// any call; `Err` is the sentence to show.
    pub fn check_parameter(&self, name: &str, value: &str) -> Result<(), String> {
        let Some((_, spec)) = self.parameters.iter().find(|(k, _)| k == name) else {
            let known: Vec<&str> = self.parameters.iter().map(|(k, _)| k.as_str()).collect();
            return Err(format!(
                "{name} is not a parameter of the template (it has {})",
                known.join(", ")
            ));
        };
        let because = |default: String| {
            spec["ConstraintDescription"]
                .as_str()
                .map_or(default, str::to_string)
        };
        if spec["Type"] == "Number" && value.parse::<f64>().is_err() {
            return Err(format!("{name} = '{value}' must be a number"));
        }
        if let Some(allowed) = spec["AllowedValues"].as_array() {
            let allowed: Vec<String> = allowed
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect();
            if !allowed.iter().any(|a| a == value) {
                return Err(format!(
                    "{name} = '{value}' {}",
                    because(format!("must be one of {}", allowed.join(", ")))
                ));
            }
        }
        if let Some(p) = spec["AllowedPattern"].as_str() {
            let re = regex_lite::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| format!("{name}: the template's pattern {p} is invalid: {e}"))?;
            if !re.is_match(value) {
                return Err(format!(
                    "{name} = '{value}' {}",
                    because(format!("must match {p}"))
                ));
            }
        }
        Ok(())
    }

    pub fn condition(&mut self, name: &'static str, expr: Value) {
        self.conditions.push((name, expr));
    }

    pub fn resource(&mut self, logical_id: impl Into<String>, r: Resource) {
        self.resources.push((logical_id.into(), r));
    }

    pub fn output(&mut self, name: &'static str, value: Value, description: &str) {
        self.outputs
            .push((name, json!({"Description": description, "Value": value})));
    }

    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("AWSTemplateFormatVersion".into(), json!("2010-09-09"));
        root.insert("Description".into(), json!(self.description));
        let ordered = |items: &[(&'static str, Value)]| {
            Value::Object(
                items
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        };
        root.insert(
            "Parameters".into(),
            Value::Object(
                self.parameters
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        );
        root.insert("Conditions".into(), ordered(&self.conditions));
        let mut resources = Map::new();
        for (id, r) in &self.resources {
            let mut m = Map::new();
            m.insert("Type".into(), json!(r.kind));
            if let Some(c) = r.condition {
                m.insert("Condition".into(), json!(c));
            }
            if !r.depends_on.is_empty() {
                m.insert("DependsOn".into(), json!(r.depends_on));
            }
            if let Some(p) = r.retain {
                m.insert("DeletionPolicy".into(), json!(p));
                // An update that replaces the resource keeps the old one the same way
                // (`RetainExceptOnCreate` is a deletion policy only).
                let replace = if p == "RetainExceptOnCreate" {
                    "Retain"
                } else {
                    p
                };
                m.insert("UpdateReplacePolicy".into(), json!(replace));
            }
            m.insert("Properties".into(), r.properties.clone());
            resources.insert(id.clone(), Value::Object(m));
        }
        root.insert("Resources".into(), Value::Object(resources));
        root.insert("Outputs".into(), ordered(&self.outputs));
        Value::Object(root)
    }

    pub fn to_yaml(&self) -> String {
        format!(
            "# Generated by `cargo run -p deploy -- render`; do not edit.\n{}",
            yaml::to_yaml(&self.to_value())
        )
    }
}

/// `{"Ref": name}`
pub fn r(name: &str) -> Value {
    json!({"Ref": name})
}

/// `{"Fn::GetAtt": [id, attr]}`
pub fn att(id: &str, attr: &str) -> Value {
    json!({"Fn::GetAtt": [id, attr]})
}

/// `{"Fn::Sub": s}`
pub fn sub(s: &str) -> Value {
    json!({"Fn::Sub": s})
}

/// `{"Fn::Sub": [s, vars]}`
pub fn sub_with(s: &str, vars: Value) -> Value {
    json!({"Fn::Sub": [s, vars]})
}

/// `{"Fn::If": [condition, a, b]}`
pub fn if_(condition: &str, a: Value, b: Value) -> Value {
    json!({"Fn::If": [condition, a, b]})
}

pub fn no_value() -> Value {
    r("AWS::NoValue")
}
