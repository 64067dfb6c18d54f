//! template.yaml and the code agree: every function the workspace builds is deployed, every
//! variable a function requires is set (to the right resource), every route a router serves
//! is wired, and every role grants what its function does with its table and queues —
//! and nothing broader.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_yaml_ng::Value;
use std::collections::{BTreeSet, HashMap};

fn template() -> Value {
    let path = format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The logical id a value refers to: `!Ref X`, `!GetAtt X.Arn`, or `${X...}` in a `!Sub`.
fn refs(v: &Value) -> Vec<String> {
    match v {
        Value::Tagged(t) => {
            let inner = t.value.as_str().unwrap_or_default();
            match t.tag.to_string().as_str() {
                "!Ref" => vec![inner.to_owned()],
                "!GetAtt" => vec![inner.split('.').next().unwrap_or_default().to_owned()],
                "!Sub" => inner
                    .split("${")
                    .skip(1)
                    .filter_map(|p| p.split(['}', '.']).next())
                    .map(str::to_owned)
                    .collect(),
                _ => vec![],
            }
        }
        Value::Sequence(items) => items.iter().flat_map(refs).collect(),
        _ => vec![],
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

struct Function<'a> {
    logical_id: String,
    props: &'a Value,
    statements: Vec<&'a Value>,
}

fn functions(t: &Value) -> HashMap<String, Function<'_>> {
    let resources = t["Resources"].as_mapping().unwrap();
    let mut out = HashMap::new();
    for (id, r) in resources {
        if r["Type"] != *"AWS::Serverless::Function" {
            continue;
        }
        let binary = r["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            r["Metadata"]["BuildMethod"],
            Value::from("rust-cargolambda")
        );
        let role = &refs(&r["Properties"]["Role"])[0];
        let role = &t["Resources"][role.as_str()];
        let statements = role["Properties"]["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .unwrap()
                    .iter()
            })
            .collect();
        out.insert(
            binary,
            Function {
                logical_id: id.as_str().unwrap().to_owned(),
                props: &r["Properties"],
                statements,
            },
        );
    }
    out
}

fn allows(f: &Function, action: &str, resource: &str) -> bool {
    f.statements.iter().any(|s| {
        s["Effect"] == *"Allow"
            && strings(&s["Action"]).iter().any(|a| a == action)
            && refs(&s["Resource"]).iter().any(|r| r == resource)
    })
}

#[test]
fn every_function_of_the_workspace_is_deployed() {
    let t = template();
    let fns = functions(&t);
    let deployed: BTreeSet<&str> = fns.keys().map(String::as_str).collect();
    let built: BTreeSet<&str> = relay_aws::FUNCTION_ENV.iter().map(|(f, _)| *f).collect();
    assert_eq!(deployed, built);
    for (name, f) in &fns {
        assert!(f.logical_id.ends_with("Function"), "{}", f.logical_id);
        assert_eq!(
            f.props["CodeUri"],
            *format!("functions/{name}").as_str(),
            "{name} builds from its package"
        );
    }
    for name in deployed {
        let manifest = format!(
            "{}/../functions/{name}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        assert!(
            std::path::Path::new(&manifest).exists(),
            "{name} is a workspace package"
        );
    }
    assert_eq!(
        t["Globals"]["Function"]["Runtime"],
        Value::from("provided.al2023")
    );
    assert_eq!(
        t["Globals"]["Function"]["Architectures"][0],
        Value::from("arm64")
    );
}

#[test]
fn every_variable_a_function_reads_is_set_to_the_right_resource() {
    let t = template();
    let globals = t["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .unwrap();
    let target: HashMap<&str, &str> = [
        ("RELAY_TABLE", "Table"),
        ("INBOUND_QUEUE_URL", "InboundQueue"),
        ("OUTBOUND_QUEUE_URL", "OutboundQueue"),
        ("OUTBOUND_DLQ_URL", "OutboundDeadLetterQueue"),
        ("KEYS_TABLE", "KeysTable"),
        ("AUDIT_TABLE", "AuditTable"),
        ("RELAY_KMS_KEY_ID", "RelayKey"),
        ("MEDIA_BUCKET", "MediaBucket"),
    ]
    .into();
    for (name, f) in functions(&t) {
        let own = f.props["Environment"]["Variables"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        let lookup = |var: &str| own.get(var).or_else(|| globals.get(var)).cloned();
        let required = relay_aws::FUNCTION_ENV
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        let optional = relay_aws::FUNCTION_OPTIONAL_ENV
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        for var in required.iter().chain(optional) {
            let value =
                lookup(var).unwrap_or_else(|| panic!("{name}: {var} is not set in template.yaml"));
            if let Some(resource) = target.get(var) {
                assert_eq!(
                    refs(&value),
                    [resource.to_string()],
                    "{name}: {var} points at the wrong resource"
                );
            }
        }
        for (var, _) in own.iter().chain(globals.iter()) {
            let var = var.as_str().unwrap();
            assert!(
                required.contains(&var) || optional.contains(&var),
                "{name}: {var} is set but never read"
            );
        }
    }
}

#[test]
fn every_route_is_wired_to_its_function() {
    let t = template();
    let fns = functions(&t);
    let routes = |f: &Function| -> BTreeSet<(String, String)> {
        f.props["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|events| events.values())
            .filter(|e| e["Type"] == *"HttpApi")
            .map(|e| {
                (
                    e["Properties"]["Method"].as_str().unwrap().to_owned(),
                    e["Properties"]["Path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // The inbox-api function serves the API and the staff web inbox.
    let want: BTreeSet<(String, String)> = inbox_api::ROUTES
        .iter()
        .chain(relay_web::ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes(&fns["inbox-api"]), want);
    // Webhooks reach webhook-receiver through its Function URL (every path; its router serves
    // webhook_receiver::ROUTES), not through the HTTP API, whose request charge they would pay.
    assert!(routes(&fns["webhook-receiver"]).is_empty());
    assert_eq!(
        fns["webhook-receiver"].props["FunctionUrlConfig"]["AuthType"],
        serde_yaml_ng::Value::from("NONE"),
        "webhooks authenticate in the function"
    );
    let outputs = &t["Outputs"];
    for (output, route) in [("WebhookUrl", 0), ("MetaAppWebhookUrl", 2)] {
        let Value::Tagged(sub) = &outputs[output]["Value"] else {
            panic!("{output} is a !Sub");
        };
        let path = webhook_receiver::ROUTES[route].1.trim_start_matches('/');
        assert_eq!(
            sub.value.as_str(),
            Some(format!("${{WebhookReceiverFunctionUrl.FunctionUrl}}{path}").as_str()),
            "{output}"
        );
    }
    assert!(routes(&fns["message-router"]).is_empty() && routes(&fns["reply-sender"]).is_empty());
    for f in ["inbox-api", "message-router", "reply-sender"] {
        assert!(fns[f].props.get("FunctionUrlConfig").is_none(), "{f}");
    }
}

#[test]
fn every_role_grants_what_its_function_does_and_no_more() {
    let t = template();
    let fns = functions(&t);
    let writes_store = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"];
    for (name, f) in &fns {
        assert!(
            allows(f, "dynamodb:GetItem", "Table"),
            "{name} reads the table"
        );
        assert!(
            allows(f, "kms:Decrypt", "RelayKey"),
            "{name} decrypts secrets and queue messages"
        );
        if name != "webhook-receiver" {
            for a in writes_store {
                assert!(allows(f, a, "Table"), "{name}: {a}");
            }
        }
        // Every function seals or opens personal data: it reads and creates data keys.
        for a in [
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
        ] {
            assert!(allows(f, a, "KeysTable"), "{name}: {a} on KeysTable");
        }
        assert!(
            allows(f, "kms:GenerateDataKey", "RelayKey"),
            "{name} creates data keys"
        );
        // Only the inbox API erases: it alone may delete keys and items.
        assert_eq!(
            allows(f, "dynamodb:DeleteItem", "KeysTable"),
            name == "inbox-api",
            "{name}: DeleteItem on KeysTable"
        );
        assert_eq!(
            allows(f, "dynamodb:BatchWriteItem", "Table"),
            name == "inbox-api",
            "{name}: BatchWriteItem on Table"
        );
        // The audit log is append-only for every function.
        for a in [
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:BatchWriteItem",
        ] {
            assert!(!allows(f, a, "AuditTable"), "{name}: {a} on AuditTable");
        }
        // Consumers of SQS event sources.
        if let Some(events) = f.props["Events"].as_mapping() {
            for e in events.values().filter(|e| e["Type"] == *"SQS") {
                let queue = &refs(&e["Properties"]["Queue"])[0];
                for a in [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                ] {
                    assert!(allows(f, a, queue), "{name}: {a} on {queue}");
                }
                assert_eq!(
                    strings(&e["Properties"]["FunctionResponseTypes"]),
                    ["ReportBatchItemFailures"],
                    "{name}"
                );
                let visibility = t["Resources"][queue.as_str()]["Properties"]["VisibilityTimeout"]
                    .as_u64()
                    .unwrap();
                let timeout = f.props["Timeout"].as_u64().unwrap();
                assert!(
                    visibility >= 6 * timeout,
                    "{queue}: visibility {visibility} < 6 x {timeout}"
                );
                let receives = t["Resources"][queue.as_str()]["Properties"]["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap();
                assert!(receives >= 5, "{queue}: maxReceiveCount {receives}");
            }
        }
        // Producers: the queues named in their environment.
        let env = f.props["Environment"]["Variables"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        for (var, action) in [
            ("INBOUND_QUEUE_URL", "sqs:SendMessage"),
            ("OUTBOUND_DLQ_URL", "sqs:SendMessage"),
            (
                "OUTBOUND_QUEUE_URL",
                if name == "reply-sender" {
                    "sqs:ChangeMessageVisibility"
                } else {
                    "sqs:SendMessage"
                },
            ),
        ] {
            if let Some(v) = env.get(var) {
                let queue = &refs(v)[0];
                assert!(allows(f, action, queue), "{name}: {action} on {queue}");
                // reply-sender also queues jobs of its own (forwards of a photo's E-Rezept codes).
                if var == "OUTBOUND_QUEUE_URL" {
                    assert!(
                        allows(f, "sqs:SendMessage", queue),
                        "{name}: SendMessage on {queue}"
                    );
                }
                if action == "sqs:SendMessage" {
                    assert!(
                        allows(f, "kms:GenerateDataKey", "RelayKey"),
                        "{name} sends to an encrypted queue"
                    );
                }
            }
        }
        // Least privilege: no wildcard actions; "*" resources only for X-Ray (it has no ARNs).
        for s in &f.statements {
            let actions = strings(&s["Action"]);
            assert!(
                actions.iter().all(|a| !a.contains('*')),
                "{name}: wildcard action {actions:?}"
            );
            if s["Resource"] == *"*" {
                assert!(
                    actions.iter().all(|a| a.starts_with("xray:")),
                    "{name}: * resource for {actions:?}"
                );
            }
        }
    }
    assert!(allows(&fns["inbox-api"], "dynamodb:PutItem", "AuditTable"));
    // Media: reply-sender writes files, inbox-api reads and erases them; nobody else touches them.
    for a in ["s3:PutObject", "s3:AbortMultipartUpload"] {
        assert!(
            allows(&fns["reply-sender"], a, "MediaBucket"),
            "reply-sender: {a}"
        );
    }
    for a in ["s3:GetObject", "s3:DeleteObject", "s3:ListBucket"] {
        assert!(
            allows(&fns["inbox-api"], a, "MediaBucket"),
            "inbox-api: {a}"
        );
    }
    for f in ["webhook-receiver", "message-router"] {
        assert!(
            !fns[f]
                .statements
                .iter()
                .any(|s| refs(&s["Resource"]).iter().any(|r| r == "MediaBucket")),
            "{f} has no business with media files"
        );
    }
    let bucket = &t["Resources"]["MediaBucket"]["Properties"];
    assert_eq!(
        bucket["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"],
        Value::Bool(true)
    );
    assert!(
        bucket.get("VersioningConfiguration").is_none(),
        "no versions: deletion is final"
    );
    assert_eq!(
        refs(
            &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
                ["KMSMasterKeyID"]
        ),
        ["RelayKey"]
    );
    let t2 = &t["Resources"];
    assert_eq!(
        t2["KeysTable"]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        Value::Bool(false),
        "the key table must have no backups, or erasure could be undone"
    );
    for table in ["Table", "AuditTable"] {
        assert_eq!(
            t2[table]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            Value::Bool(true),
            "{table} has backups"
        );
    }
    for a in [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ] {
        assert!(
            !allows(&fns["webhook-receiver"], a, "Table"),
            "the receiver never writes the table ({a})"
        );
    }
}
