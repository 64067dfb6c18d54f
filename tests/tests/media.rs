//! Media end to end on moto (S3, DynamoDB, SQS, KMS): a customer's photo is fetched through a
//! fake 360dialog right after its webhook, stored sealed in S3, served by the inbox API to its
//! pharmacy, and deleted with the contact.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_e2e::fake::{Fake, MediaMode};
use relay_e2e::{Moto, deploy, drain, drain_jobs};
use serde_json::{Value, json};

/// One pharmacy, one 360dialog number served by the fake at `fake_url`.
fn config(fake_url: &str) -> String {
    format!(
        r#"
[[tenants]]
id = "apotheke"
name = "Apotheke"
api_keys = ["sk_media_0123456789abcdef"]
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
api_key = "d360-key"
api_base_url = "{fake_url}"
"#
    )
}

/// Posts a customer's webhook to the receiver (answered 200), lets the router take it, then
/// reply-sender `rounds` times (a fetch queues forwards that the next round delivers).
async fn deliver(
    clients: &relay_aws::Clients,
    d: &relay_e2e::Deployment,
    w: &relay_e2e::Wired,
    hook: &Value,
    rounds: usize,
) {
    let status = reqwest::Client::new()
        .post(format!("{}/webhooks/whatsapp/111", w.receiver_url))
        .bearer_auth("tok")
        .json(hook)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    drain(&clients.sqs, &d.queue_url, &w.router).await.unwrap();
    for _ in 0..rounds {
        drain_jobs(&clients.sqs, &d.outbound_url, &w.sender)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_photo_goes_from_webhook_to_s3_sealed_to_the_pharmacy_and_away_with_erasure() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let fake = Fake::start().await;
    let d = deploy(&clients, "media", 5, &config(&fake.url))
        .await
        .unwrap();
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    // A 9 MiB scan: more than one S3 multipart part.
    let mut photo = b"%PRESCRIPTION-SCAN%".repeat(9 * 1024 * 1024 / 19 + 1);
    photo.truncate(9 * 1024 * 1024 + 123);
    fake.add_media("SCAN1", photo.clone(), MediaMode::Good);
    let now = relay_core::Clock::system().now();
    let hook = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
        "messages":[{"from":"4915112345678","id":"wamid.SCAN1","timestamp":now.to_string(),"type":"image",
          "image":{"id":"SCAN1","mime_type":"image/jpeg","sha256":Fake::sha256_b64(&photo)}}]}}]}]});
    let http = reqwest::Client::new();
    // The router queues the fetch; reply-sender does it.
    deliver(&clients, &d, &w, &hook, 1).await;

    let auth = "sk_media_0123456789abcdef";
    let convs: Value = http
        .get(format!("{}/v1/conversations", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = convs["conversations"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msgs: Value = http
        .get(format!("{}/v1/conversations/{cid}/messages", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media = &msgs["messages"][0]["media"];
    assert_eq!(media["status"], "available", "{msgs}");
    assert_eq!(media["size"], photo.len());

    // In S3: one object, sealed (no plaintext run of the file in it).
    let listed = clients
        .s3()
        .list_objects_v2()
        .bucket(&d.media_bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), 1);
    assert!(
        keys[0].starts_with(&format!("apotheke/{cid}/md_")),
        "{keys:?}"
    );
    let object = clients
        .s3()
        .get_object()
        .bucket(&d.media_bucket)
        .key(&keys[0])
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(object.len() > photo.len());
    assert!(
        !object.windows(19).any(|w| w == b"%PRESCRIPTION-SCAN%"),
        "the stored object is readable"
    );

    // The pharmacy downloads it (a deployment configured for larger responses than the default).
    let media_id = media["id"].as_str().unwrap();
    let resp = http
        .get(format!("{}/v1/media/{media_id}", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        413,
        "above the 5 MB Lambda response limit"
    );
    // Opened with the contact's key (as a larger-response deployment would), it is the file.
    use relay_core::media::BlobStore;
    let blobs = clients.blob_store(&d.media_bucket);
    let mut reader = blobs.open(&keys[0]).await.unwrap().unwrap();
    let tenant = relay_core::ids::TenantId::parse("apotheke").unwrap();
    let keyring = d.keyring(&clients);
    let mut opener = relay_core::media::FileOpener::new(
        &keyring,
        &tenant,
        media_id,
        photo.len() as u64,
        reader.as_mut(),
    )
    .await
    .unwrap();
    let mut opened = Vec::new();
    while let Some(chunk) = opener.next(reader.as_mut()).await.unwrap() {
        opened.extend(chunk);
    }
    assert!(opened == photo, "the stored file opens to the original");

    // Erasure deletes the object with everything else.
    let receipt: Value = http
        .delete(format!("{}/v1/contacts/{cid}", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["deleted"]["media"], 1, "{receipt}");
    let listed = clients
        .s3()
        .list_objects_v2()
        .bucket(&d.media_bucket)
        .send()
        .await
        .unwrap();
    assert!(listed.contents().is_empty());
}

#[tokio::test]
async fn a_small_document_is_served_whole_by_the_inbox_api() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let fake = Fake::start().await;
    let d = deploy(&clients, "media2", 5, &config(&fake.url))
        .await
        .unwrap();
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    let pdf = b"%PDF-1.7 Medikationsplan".repeat(40_000);
    fake.add_media("PDF1", pdf.clone(), MediaMode::Good);
    let now = relay_core::Clock::system().now();
    let hook = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
        "messages":[{"from":"4915112345678","id":"wamid.PDF1","timestamp":now.to_string(),"type":"document",
          "document":{"id":"PDF1","mime_type":"application/pdf","filename":"Medikationsplan.pdf","sha256":Fake::sha256_b64(&pdf)}}]}}]}]});
    let http = reqwest::Client::new();
    deliver(&clients, &d, &w, &hook, 1).await;
    let auth = "sk_media_0123456789abcdef";
    let convs: Value = http
        .get(format!("{}/v1/conversations", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = convs["conversations"][0]["contact_id"].as_str().unwrap();
    let msgs: Value = http
        .get(format!("{}/v1/conversations/{cid}/messages", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_id = msgs["messages"][0]["media"]["id"].as_str().unwrap();
    let resp = http
        .get(format!("{}/v1/media/{media_id}", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"Medikationsplan.pdf\""
    );
    assert_eq!(resp.bytes().await.unwrap().to_vec(), pdf);
}

#[tokio::test]
async fn the_pharmacy_uploads_a_file_and_sends_it_by_id() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let fake = Fake::start().await;
    let d = deploy(&clients, "media3", 5, &config(&fake.url))
        .await
        .unwrap();
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let hook = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
        "messages":[{"from":"4915112345678","id":"wamid.ASK1","timestamp":now.to_string(),"type":"text","text":{"body":"Schicken Sie mir den Plan?"}}]}}]}]});
    deliver(&clients, &d, &w, &hook, 0).await;
    let auth = "sk_media_0123456789abcdef";
    let convs: Value = http
        .get(format!("{}/v1/conversations", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = convs["conversations"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let upload = |mime: &str, body: Vec<u8>, contact: &str| {
        http.post(format!(
            "{}/v1/media?contact_id={contact}&filename=Medikationsplan.pdf",
            w.inbox_url
        ))
        .bearer_auth(auth)
        .header("content-type", mime)
        .body(body)
        .send()
    };
    // Refused: a type WhatsApp does not send, an image above 5 MB, an unknown conversation.
    assert_eq!(
        upload("application/x-msdownload", b"MZ".to_vec(), &cid)
            .await
            .unwrap()
            .status()
            .as_u16(),
        415
    );
    assert_eq!(
        upload("image/jpeg", vec![0; 5 * 1024 * 1024 + 1], &cid)
            .await
            .unwrap()
            .status()
            .as_u16(),
        413
    );
    assert_eq!(
        upload(
            "application/pdf",
            b"%PDF".to_vec(),
            "c_00000000000000000000000000000000"
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        404
    );
    // A document WhatsApp would take (up to 16 MB) but a Lambda request cannot carry: refused
    // by the deployment's own limit, which names it, and nothing is stored.
    let big = upload("application/pdf", vec![b'%'; 4_500_001], &cid)
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let problem: Value = big.json().await.unwrap();
    assert_eq!(
        problem["title"],
        "The file is larger than this deployment takes"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("at most 4500000"),
        "{problem}"
    );
    let pdf = b"%PDF-1.7 Plan fuer Erika".repeat(1000);
    let resp = upload("application/pdf", pdf.clone(), &cid).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let up: Value = resp.json().await.unwrap();
    let media_id = up["media_id"].as_str().unwrap().to_owned();
    assert!(media_id.starts_with("mu_"));
    assert_eq!(up["size"], pdf.len());
    // It can be read back, and it lies sealed in S3.
    let back = http
        .get(format!("{}/v1/media/{media_id}", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status().as_u16(), 200);
    assert_eq!(back.bytes().await.unwrap().to_vec(), pdf);

    // A reply naming an unknown upload is refused; the real one is sent by WhatsApp media id.
    let reply = |body: Value| {
        http.post(format!("{}/v1/conversations/{cid}/messages", w.inbox_url))
            .bearer_auth(auth)
            .json(&body)
            .send()
    };
    let r = reply(json!({"type": "document", "media_id": "mu_00000000000000000000000000000000"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let r = reply(json!({"type": "image", "media_id": media_id}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "a PDF is not an image");
    let r = reply(json!({"type": "document", "media_id": media_id, "caption": "Ihr Plan"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    drain_jobs(&clients.sqs, &d.outbound_url, &w.sender)
        .await
        .unwrap();
    let reqs = fake.requests();
    let uploaded = reqs
        .iter()
        .find(|r| r.path == "/media")
        .expect("uploaded to 360dialog");
    assert_eq!(uploaded.header("d360-api-key").as_deref(), Some("d360-key"));
    assert!(
        uploaded
            .body
            .windows(pdf.len())
            .any(|w| w == pdf.as_slice()),
        "the file, opened"
    );
    assert!(String::from_utf8_lossy(&uploaded.body).contains("Medikationsplan.pdf"));
    let sent = reqs
        .iter()
        .find(|r| r.path == "/messages")
        .expect("sent")
        .json();
    assert_eq!(sent["type"], "document");
    assert!(
        sent["document"]["id"]
            .as_str()
            .unwrap()
            .starts_with("FAKEUPLOAD")
    );
    assert_eq!(sent["document"]["filename"], "Medikationsplan.pdf");
    assert_eq!(sent["document"]["caption"], "Ihr Plan");
    assert!(sent["document"].get("media_id").is_none());
}

#[path = "../../crates/scan/tests/printout/mod.rs"]
mod printout;

/// A pharmacy that takes E-Rezept tokens from photos, forwards them with the tokens, and has
/// the photos deleted once read.
fn prescription_config(fake_url: &str, forward_url: &str) -> String {
    format!(
        r#"
[[tenants]]
id = "apotheke"
name = "Apotheke"
api_keys = ["sk_media_0123456789abcdef"]
forward_url = "{forward_url}/hooks/whatsapp"
forward_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
forward_prescriptions = true
delete_prescription_images_after_decode = true
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
api_key = "d360-key"
api_base_url = "{fake_url}"
"#
    )
}

#[tokio::test]
async fn e_rezept_codes_in_a_photo_and_a_pdf_reach_the_pharmacy_once_each() {
    use printout::*;
    use rxing::BarcodeFormat;
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let (fake, pharmacy) = (Fake::start().await, Fake::start().await);
    let d = deploy(
        &clients,
        "erezept",
        5,
        &prescription_config(&fake.url, &pharmacy.url),
    )
    .await
    .unwrap();
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    let t = tokens(3);
    let dm =
        |t: &[relay_core::erezept::Prescription]| code(&payload(t), BarcodeFormat::DATA_MATRIX);
    // A phone photo of a printout with two codes; then a PDF with the second again and a third.
    let photo = jpeg(
        &photo(
            &sheet(&[dm(&t[..1]), dm(&t[1..2])], 6),
            1600,
            1200,
            11.0,
            1.2,
        ),
        75,
    );
    let file = pdf(vec![bitmap_xobject(&sheet(
        &[dm(&t[1..2]), dm(&t[2..3])],
        4,
    ))]);
    fake.add_media("RX-PHOTO", photo.clone(), MediaMode::Good);
    fake.add_media("RX-PDF", file.clone(), MediaMode::Good);
    let now = relay_core::Clock::system().now();
    let http = reqwest::Client::new();
    for (wamid, kind, media) in [
        (
            "wamid.RXP",
            "image",
            json!({"id":"RX-PHOTO","mime_type":"image/jpeg","sha256":Fake::sha256_b64(&photo)}),
        ),
        (
            "wamid.RXD",
            "document",
            json!({"id":"RX-PDF","mime_type":"application/pdf","filename":"eRezept.pdf","sha256":Fake::sha256_b64(&file)}),
        ),
    ] {
        let hook = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
            "messages":[{"from":"4915112345678","id":wamid,"timestamp":now.to_string(),"type":kind, kind: media}]}}]}]});
        // The fetch reads the codes and queues the forward; the next round delivers it.
        deliver(&clients, &d, &w, &hook, 3).await;
    }

    let auth = "sk_media_0123456789abcdef";
    let convs: Value = http
        .get(format!("{}/v1/conversations", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = convs["conversations"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msgs: Value = http
        .get(format!("{}/v1/conversations/{cid}/messages", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_type = |kind: &str| {
        msgs["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == kind)
            .cloned()
            .unwrap()
    };
    let ids = |m: &Value| -> Vec<String> {
        let mut ids: Vec<String> = m["prescriptions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["task_id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let (image, document) = (by_type("image"), by_type("document"));
    let mut first_two = vec![t[0].task_id.clone(), t[1].task_id.clone()];
    first_two.sort();
    assert_eq!(ids(&image), first_two, "{image}");
    assert_eq!(
        ids(&document),
        vec![t[2].task_id.clone()],
        "the second token came in the photo already: {document}"
    );
    assert_eq!(
        image["prescriptions"][0]["access_code"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    // The tenant has the files deleted once read: gone from S3, shown as deleted.
    for m in [&image, &document] {
        assert_eq!(m["media"]["status"], "deleted", "{m}");
    }
    let listed = clients
        .s3()
        .list_objects_v2()
        .bucket(&d.media_bucket)
        .send()
        .await
        .unwrap();
    assert!(listed.contents().is_empty(), "{listed:?}");
    let resp = http
        .get(format!(
            "{}/v1/media/{}",
            w.inbox_url,
            image["media"]["id"].as_str().unwrap()
        ))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410);

    // One prescription.received forward per message, with the new tokens only.
    let forwards: Vec<Value> = pharmacy
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|p| p["type"] == "prescription.received")
        .collect();
    assert_eq!(forwards.len(), 2, "{forwards:?}");
    let counts: Vec<u64> = forwards
        .iter()
        .map(|f| f["data"]["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 3, "{forwards:?}");
    assert!(
        forwards
            .iter()
            .all(|f| f["data"]["prescriptions"].is_array())
    );

    // In the export; gone with the contact's erasure.
    let export: Value = http
        .get(format!("{}/v1/contacts/{cid}/export", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(export.to_string().contains(&t[2].access_code), "{export}");
    let receipt: Value = http
        .delete(format!("{}/v1/contacts/{cid}", w.inbox_url))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["deleted"]["prescriptions"], 2, "{receipt}");
}
