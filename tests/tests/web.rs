//! The staff web inbox on the AWS backends (DynamoDB, SQS, KMS on moto), served as the
//! inbox-api function serves it: a staff account written the way `relay staff add --aws` writes
//! it, sign-in, the conversation list, a reply queued for reply-sender, sign-out.
//!
//! Webhook shape: Meta's Cloud API "messages" webhook (text), as 360dialog forwards it:
//! https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_core::ids::TenantId;
use relay_core::staff::{self, Role, StaffAccount, StaffStore};
use relay_e2e::{Moto, deploy, drain, wire};
use serde_json::json;

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-web"
name = "Apotheke"
api_keys = ["sk_web_e2e_0123456789abcdef"]

[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "tok-web-e2e"
api_key = "d360-web-e2e"
"#;

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn staff_sign_in_and_answer_on_the_aws_backends() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = deploy(&clients, "web", 5, CONFIG).await.unwrap();
    let wired = wire(&clients, &d).await.unwrap();
    let tenant = TenantId::parse("apotheke-web").unwrap();
    let store = clients.staff_store(&d.table);
    let account = StaffAccount {
        id: staff::new_staff_id(),
        tenant: tenant.clone(),
        email: "anna@apotheke.example".into(),
        role: Role::Staff,
        password_hash: staff::hash_password("Rezept-Theke-2026").unwrap(),
        created_at: relay_core::Clock::system().now(),
        sessions_valid_after: 0,
    };
    assert!(store.add_staff(&account).await.unwrap());

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let now = relay_core::Clock::system().now();
    let hook = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Erika Mustermann"}, "wa_id": "4915112345678"}],
        "messages": [{"from": "4915112345678", "id": "wamid.WEBE2E1", "timestamp": now.to_string(), "type": "text", "text": {"body": "Ist mein Rezept da?"}}]}}]}]});
    let r = http
        .post(format!(
            "{}/webhooks/whatsapp/106540352242922",
            wired.receiver_url
        ))
        .bearer_auth("tok-web-e2e")
        .json(&hook)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drain(&clients.sqs, &d.queue_url, &wired.router)
        .await
        .unwrap();

    // Sign in (API Gateway's HTTPS: the cookie is __Host- and Secure).
    let url = &wired.inbox_url;
    let page = http.get(format!("{url}/login")).send().await.unwrap();
    let login = set_cookie(&page, "relay_login").unwrap();
    let login = login.split(';').next().unwrap().to_owned();
    let csrf = hidden(&page.text().await.unwrap(), "csrf");
    let r = http
        .post(format!("{url}/login"))
        .header("cookie", login)
        .form(&[
            ("email", "Anna@Apotheke.example"),
            ("password", "Rezept-Theke-2026"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed in");
    let cookie = set_cookie(&r, "__Host-relay_session").expect("a __Host- cookie over HTTPS");
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"));
    let cookie = cookie.split(';').next().unwrap().to_owned();

    let inbox = http
        .get(format!("{url}/inbox"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(inbox.contains("Erika Mustermann") && inbox.contains("Ist mein Rezept da?"));
    let start = inbox.find("data-contact=\"").unwrap() + "data-contact=\"".len();
    let contact = inbox[start..start + inbox[start..].find('"').unwrap()].to_owned();
    let csrf = hidden(&inbox, "csrf");
    let conversation = http
        .get(format!("{url}/inbox/c/{contact}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = http
        .post(format!("{url}/inbox/c/{contact}/reply"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("text", "Ja, es liegt bereit."),
            ("nonce", hidden(&conversation, "nonce").as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("notice=queued"),
        "{:?}",
        r.headers()["location"]
    );
    // The reply is in the store and its send job on reply-sender's queue.
    let msgs: serde_json::Value = http
        .get(format!("{url}/v1/conversations/{contact}/messages"))
        .bearer_auth("sk_web_e2e_0123456789abcdef")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        msgs["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["direction"] == "outbound" && m["text"] == "Ja, es liegt bereit."),
        "{msgs}"
    );
    let jobs = clients
        .sqs
        .receive_message()
        .queue_url(&d.outbound_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert!(!jobs.messages().is_empty(), "no send job queued");

    // A document WhatsApp would take (up to 16 MB) but a Lambda request cannot carry is
    // refused by the deployment's limit (MEDIA_UPLOAD_MAX_BYTES, 4,500,000 by default); the
    // same document at the limit goes out.
    let attach = |bytes: Vec<u8>, nonce: String| {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf.clone())
            .text("nonce", nonce)
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name("plan.pdf")
                    .mime_str("application/pdf")
                    .unwrap(),
            );
        http.post(format!("{url}/inbox/c/{contact}/attachment"))
            .header("cookie", &cookie)
            .multipart(form)
            .send()
    };
    let attach_nonce = || {
        let i = conversation.find("id=\"attach-form\"").unwrap();
        hidden(&conversation[i..], "nonce")
    };
    let r = attach(vec![b'%'; 4_500_001], attach_nonce()).await.unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=attachment"),
        "{:?}",
        r.headers()["location"]
    );
    let r = attach(vec![b'%'; 4_500_000], attach_nonce()).await.unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("notice=queued"),
        "{:?}",
        r.headers()["location"]
    );

    // Sign out: the session is gone from the table.
    let r = http
        .post(format!("{url}/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let r = http
        .get(format!("{url}/inbox"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/login", "signed out");
}
