//! The template as the sim reads it: YAML parsed with serde-saphyr into JSON values, then its
//! parameters, conditions and intrinsic functions evaluated against the physical ids of the
//! deployed stack, the way CloudFormation evaluates them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::SimError;

/// A parsed CloudFormation template.
#[derive(Debug, Clone)]
pub struct Template {
    doc: Value,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, SimError> {
        let doc: Value = serde_saphyr::from_str(text)
            .map_err(|e| SimError::Template(format!("the template is not valid YAML: {e}")))?;
        if !doc.get("Resources").is_some_and(Value::is_object) {
            return Err(SimError::Template(
                "the template has no Resources section".into(),
            ));
        }
        Ok(Template { doc })
    }

    pub fn resources(&self) -> &Map<String, Value> {
        self.doc["Resources"]
            .as_object()
            .expect("checked when parsed")
    }

    pub fn resource(&self, logical_id: &str) -> Option<&Value> {
        self.resources().get(logical_id)
    }

    /// Logical ids and definitions of every resource of one type, in template order.
    pub fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources()
            .iter()
            .filter(move |(_, r)| r["Type"] == ty)
            .map(|(id, r)| (id.as_str(), r))
    }

    fn parameters(&self) -> Option<&Map<String, Value>> {
        self.doc.get("Parameters").and_then(Value::as_object)
    }
}

/// Where the stack runs: the pseudo parameters.
#[derive(Debug, Clone)]
pub struct Place {
    pub region: String,
    pub account: String,
    pub stack_name: String,
}

impl Place {
    pub fn partition(&self) -> &'static str {
        "aws"
    }
}

/// Evaluates intrinsic functions with the stack's parameters and physical resource ids.
#[derive(Debug, Clone)]
pub struct Resolver {
    template: Template,
    params: BTreeMap<String, Value>,
    physical: BTreeMap<String, String>,
    pub place: Place,
}

impl Resolver {
    /// `given` overrides the template's defaults; `physical` maps logical ids to physical ids.
    pub fn new(
        template: Template,
        given: &BTreeMap<String, String>,
        physical: BTreeMap<String, String>,
        place: Place,
    ) -> Result<Resolver, SimError> {
        let mut params = BTreeMap::new();
        for (name, def) in template.parameters().into_iter().flatten() {
            let value = match given.get(name) {
                Some(v) => json!(v),
                None => match def.get("Default") {
                    Some(Value::String(s)) => json!(s),
                    Some(Value::Number(n)) => json!(n.to_string()),
                    Some(other) => other.clone(),
                    None => {
                        return Err(SimError::Template(format!(
                            "parameter {name} has no value and no default"
                        )));
                    }
                },
            };
            params.insert(name.clone(), value);
        }
        Ok(Resolver {
            template,
            params,
            physical,
            place,
        })
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// A parameter's value (given or default).
    pub fn param(&self, name: &str) -> Option<String> {
        self.params.get(name).map(scalar)
    }

    /// Records the physical id of a resource the sim created itself.
    pub fn set_physical(&mut self, logical_id: &str, id: String) {
        self.physical.insert(logical_id.to_string(), id);
    }

    /// The physical id of a resource the stack holds.
    pub fn physical(&self, logical_id: &str) -> Option<&str> {
        self.physical.get(logical_id).map(String::as_str)
    }

    /// Whether a resource exists in this stack (its `Condition` holds).
    pub fn active(&self, logical_id: &str) -> Result<bool, SimError> {
        match self
            .template
            .resource(logical_id)
            .and_then(|r| r.get("Condition"))
            .and_then(Value::as_str)
        {
            Some(c) => self.condition(c),
            None => Ok(self.template.resource(logical_id).is_some()),
        }
    }

    /// The evaluated `Properties` of a resource.
    pub fn properties(&self, logical_id: &str) -> Result<Value, SimError> {
        let r = self
            .template
            .resource(logical_id)
            .ok_or_else(|| SimError::Template(format!("no resource {logical_id}")))?;
        Ok(self
            .resolve(r.get("Properties").unwrap_or(&Value::Null))?
            .unwrap_or(Value::Null))
    }

    pub fn condition(&self, name: &str) -> Result<bool, SimError> {
        let c = self
            .template
            .doc
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| SimError::Template(format!("no condition {name}")))?;
        self.truth(c)
    }

    fn truth(&self, v: &Value) -> Result<bool, SimError> {
        let Some((f, arg)) = intrinsic(v) else {
            return Err(SimError::Template(format!("not a condition: {v}")));
        };
        let list = |n: usize| -> Result<&Vec<Value>, SimError> {
            arg.as_array()
                .filter(|a| n == 0 || a.len() == n)
                .ok_or_else(|| SimError::Template(format!("{f} takes a list: {arg}")))
        };
        match f {
            "Fn::Equals" => {
                let a = list(2)?;
                Ok(self.resolve(&a[0])? == self.resolve(&a[1])?)
            }
            "Fn::Not" => Ok(!self.truth(&list(1)?[0])?),
            "Fn::And" => list(0)?
                .iter()
                .try_fold(true, |acc, c| Ok(acc && self.truth(c)?)),
            "Fn::Or" => list(0)?
                .iter()
                .try_fold(false, |acc, c| Ok(acc || self.truth(c)?)),
            "Condition" => self.condition(arg.as_str().unwrap_or_default()),
            other => Err(SimError::Template(format!(
                "{other} is not a condition function"
            ))),
        }
    }

    /// Evaluates every intrinsic function in `v`; `None` is `AWS::NoValue`.
    pub fn resolve(&self, v: &Value) -> Result<Option<Value>, SimError> {
        if let Some((f, arg)) = intrinsic(v) {
            return self.function(f, arg);
        }
        Ok(Some(match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.resolve(i))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .flatten()
                    .collect(),
            ),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    if let Some(v) = self.resolve(v)? {
                        out.insert(k.clone(), v);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }))
    }

    fn function(&self, f: &str, arg: &Value) -> Result<Option<Value>, SimError> {
        let bad = || SimError::Template(format!("{f} has an unexpected argument: {arg}"));
        Ok(Some(match f {
            "Ref" => {
                let name = arg.as_str().ok_or_else(bad)?;
                if name == "AWS::NoValue" {
                    return Ok(None);
                }
                self.reference(name)?
            }
            "Fn::GetAtt" => {
                let (res, att) = match arg {
                    Value::String(s) => s.split_once('.').ok_or_else(bad)?,
                    Value::Array(a) if a.len() == 2 => (
                        a[0].as_str().ok_or_else(bad)?,
                        a[1].as_str().ok_or_else(bad)?,
                    ),
                    _ => return Err(bad()),
                };
                json!(self.get_att(res, att)?)
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Value::String(s) => (s.as_str(), Map::new()),
                    Value::Array(a) if a.len() == 2 => (
                        a[0].as_str().ok_or_else(bad)?,
                        a[1].as_object().cloned().ok_or_else(bad)?,
                    ),
                    _ => return Err(bad()),
                };
                json!(self.sub(text, &vars)?)
            }
            "Fn::If" => {
                let a = arg.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
                let branch = if self.condition(a[0].as_str().ok_or_else(bad)?)? {
                    &a[1]
                } else {
                    &a[2]
                };
                return self.resolve(branch);
            }
            "Fn::Join" => {
                let a = arg.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                let parts = self.resolve(&a[1])?.unwrap_or(Value::Null);
                let parts = parts.as_array().ok_or_else(bad)?;
                json!(
                    parts
                        .iter()
                        .map(scalar)
                        .collect::<Vec<_>>()
                        .join(a[0].as_str().unwrap_or_default())
                )
            }
            "Fn::Select" => {
                let a = arg.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                let i: usize = scalar(&self.resolve(&a[0])?.unwrap_or_default())
                    .parse()
                    .map_err(|_| bad())?;
                let list = self.resolve(&a[1])?.unwrap_or_default();
                list.get(i).cloned().ok_or_else(bad)?
            }
            other => {
                return Err(SimError::Template(format!(
                    "the sim cannot evaluate {other}"
                )));
            }
        }))
    }

    fn reference(&self, name: &str) -> Result<Value, SimError> {
        let p = &self.place;
        Ok(json!(match name {
            "AWS::Region" => p.region.clone(),
            "AWS::AccountId" => p.account.clone(),
            "AWS::Partition" => p.partition().to_string(),
            "AWS::URLSuffix" => "amazonaws.com".to_string(),
            "AWS::StackName" => p.stack_name.clone(),
            "AWS::StackId" => format!(
                "arn:aws:cloudformation:{}:{}:stack/{}/sim",
                p.region, p.account, p.stack_name
            ),
            _ => {
                if let Some(v) = self.params.get(name) {
                    return Ok(v.clone());
                }
                self.physical.get(name).cloned().ok_or_else(|| {
                    SimError::Template(format!(
                        "Ref {name}: no such parameter or deployed resource"
                    ))
                })?
            }
        }))
    }

    /// `Fn::GetAtt` for the resource types of this template, built as AWS builds the values.
    pub fn get_att(&self, logical_id: &str, att: &str) -> Result<String, SimError> {
        let ty = self
            .template
            .resource(logical_id)
            .and_then(|r| r["Type"].as_str())
            .ok_or_else(|| SimError::Template(format!("GetAtt {logical_id}: no such resource")))?;
        let id = self.physical.get(logical_id).ok_or_else(|| {
            SimError::Template(format!(
                "GetAtt {logical_id}: the resource was not deployed"
            ))
        })?;
        let p = &self.place;
        let (part, r, a) = (p.partition(), &p.region, &p.account);
        Ok(match (ty, att) {
            ("AWS::DynamoDB::Table", "Arn") => format!("arn:{part}:dynamodb:{r}:{a}:table/{id}"),
            ("AWS::IAM::Role", "Arn") => format!("arn:{part}:iam::{a}:role/{id}"),
            ("AWS::Lambda::Function", "Arn") => format!("arn:{part}:lambda:{r}:{a}:function:{id}"),
            ("AWS::SQS::Queue", "Arn") => {
                format!("arn:{part}:sqs:{r}:{a}:{}", queue_name(id))
            }
            ("AWS::SQS::Queue", "QueueName") => queue_name(id).to_string(),
            ("AWS::SQS::Queue", "QueueUrl") => id.clone(),
            ("AWS::Events::Rule", "Arn") => format!(
                "arn:{part}:events:{r}:{a}:rule/{}",
                id.rsplit('/').next().unwrap_or(id)
            ),
            ("AWS::Logs::LogGroup", "Arn") => format!("arn:{part}:logs:{r}:{a}:log-group:{id}:*"),
            ("AWS::SNS::Topic", "TopicArn") => id.clone(),
            _ => {
                return Err(SimError::Template(format!(
                    "the sim cannot evaluate GetAtt {logical_id}.{att} ({ty})"
                )));
            }
        })
    }

    fn sub(&self, text: &str, vars: &Map<String, Value>) -> Result<String, SimError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| SimError::Template(format!("unclosed ${{ in Fn::Sub: {text}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar(&self.resolve(v)?.unwrap_or_default()));
            } else if let Some((res, att)) = name.split_once('.')
                && !name.starts_with("AWS::")
            {
                out.push_str(&self.get_att(res, att)?);
            } else {
                out.push_str(&scalar(&self.reference(name)?));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `{"Ref": x}` or `{"Fn::…": x}` or `{"Condition": x}` (inside conditions).
fn intrinsic(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object().filter(|m| m.len() == 1)?;
    let (k, arg) = m.iter().next()?;
    (k == "Ref" || k == "Condition" || k.starts_with("Fn::")).then_some((k.as_str(), arg))
}

/// A value as CloudFormation writes it into a string.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Parameters:
  ProjectName: {Type: "String", Default: "runvoy"}
  Empty: {Type: "String", Default: ""}
  Days: {Type: "Number", Default: 7}
Conditions:
  IsEmpty: {"Fn::Equals": [{"Ref": "Empty"}, ""]}
  NotEmpty: {"Fn::Not": [{"Condition": "IsEmpty"}]}
Resources:
  Table:
    Type: "AWS::DynamoDB::Table"
    Properties:
      TableName: {"Fn::Sub": "${ProjectName}-logs"}
  Fn:
    Type: "AWS::Lambda::Function"
    Condition: "IsEmpty"
    Properties:
      Env:
        A: {"Fn::GetAtt": ["Table", "Arn"]}
        B: {"Fn::Sub": "${Table.Arn}/x/${!Literal}/${AWS::Region}"}
        C: {"Fn::If": ["NotEmpty", "yes", {"Ref": "AWS::NoValue"}]}
        D: {"Ref": "Days"}
        E: {"Fn::Sub": ["${G}:*", {"G": {"Ref": "ProjectName"}}]}
"#;

    #[test]
    fn resolves_the_intrinsics_of_the_template() {
        let t = Template::parse(T).unwrap();
        let r = Resolver::new(
            t,
            &BTreeMap::new(),
            [("Table".to_string(), "runvoy-logs".to_string())].into(),
            Place {
                region: "eu-west-1".into(),
                account: "123456789012".into(),
                stack_name: "s".into(),
            },
        )
        .unwrap();
        assert!(r.active("Fn").unwrap());
        let p = r.properties("Fn").unwrap();
        let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/runvoy-logs";
        assert_eq!(p["Env"]["A"], arn);
        assert_eq!(p["Env"]["B"], format!("{arn}/x/${{Literal}}/eu-west-1"));
        assert!(p["Env"].get("C").is_none(), "NoValue removes the key");
        assert_eq!(p["Env"]["D"], "7");
        assert_eq!(p["Env"]["E"], "runvoy:*");
        assert_eq!(r.properties("Table").unwrap()["TableName"], "runvoy-logs");
    }

    #[test]
    fn unknown_functions_and_references_are_named() {
        let t = Template::parse(T).unwrap();
        let r = Resolver::new(
            t,
            &BTreeMap::new(),
            BTreeMap::new(),
            Place {
                region: "r".into(),
                account: "a".into(),
                stack_name: "s".into(),
            },
        )
        .unwrap();
        let e = r.properties("Fn").unwrap_err().to_string();
        assert!(e.contains("Table"), "{e}");
        let e = r
            .resolve(&json!({"Fn::Base64": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Fn::Base64"), "{e}");
        assert!(Template::parse("a: [").is_err());
    }
}
