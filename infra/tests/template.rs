//! The rendered template: checked in fresh, clean under cfn-lint, least privilege.

use std::process::Command;

fn render() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .arg("render")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn checked_in() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deployments/cloudformation-backend.yaml")
}

#[test]
fn the_checked_in_template_is_fresh() {
    let rendered = render();
    let path = checked_in();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != rendered {
        std::fs::write(&path, &rendered).unwrap();
        panic!(
            "{} was stale and has been rewritten; commit it",
            path.display()
        );
    }
    assert_eq!(render(), rendered, "rendering is deterministic");
}

#[test]
fn cfn_lint_reports_nothing() {
    let dir = std::env::temp_dir().join(format!("runvoy-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("backend.yaml");
    std::fs::write(&file, render()).unwrap();
    let out = Command::new("cfn-lint")
        .arg(&file)
        .output()
        .expect("cfn-lint must be installed (scripts/services installs it)");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "cfn-lint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn iam_policies_name_actions_without_wildcards() {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["render", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resources = doc["Resources"].as_object().unwrap();
    let mut roles = 0;
    for (id, r) in resources {
        if r["Type"] != "AWS::IAM::Role" {
            continue;
        }
        roles += 1;
        for policy in r["Properties"]["Policies"].as_array().unwrap() {
            for st in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                for action in st["Action"].as_array().unwrap() {
                    let a = action.as_str().unwrap();
                    assert!(!a.contains('*'), "{id} grants a wildcard action {a}");
                }
                for res in st["Resource"].as_array().unwrap() {
                    assert_ne!(res, "*", "{id} grants an action on every resource");
                }
            }
        }
    }
    assert_eq!(roles, 4, "one role per function");
}

#[test]
fn only_the_api_function_can_read_the_api_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["render", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let readers = |secret: &str| -> Vec<String> {
        let r = serde_json::json!({"Ref": secret});
        let mut who: Vec<String> = doc["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, res)| res["Type"] == "AWS::IAM::Role")
            .filter(|(_, res)| {
                res["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|st| {
                        st["Action"]
                            .as_array()
                            .unwrap()
                            .contains(&"secretsmanager:GetSecretValue".into())
                            && st["Resource"].as_array().unwrap().contains(&r)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        who.sort();
        who
    };
    assert_eq!(readers("ApiSecret"), ["ApiRole"], "the API keys");
    assert_eq!(
        readers("TokenSecret"),
        ["ApiRole", "WebsocketRole"],
        "the token secret"
    );
    let env = |f: &str| &doc["Resources"][f]["Properties"]["Environment"]["Variables"];
    assert!(env("WebsocketFunction")["RUNVOY_SECRET_ARN"].is_null());
    assert!(env("ForwarderFunction")["RUNVOY_TOKEN_SECRET_ARN"].is_null());
}
