//! The webhook model against realistic fixtures (tests/fixtures), and a property test that
//! parsing never panics.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use proptest::prelude::*;
use relay_core::webhook::*;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn events(name: &str) -> Vec<Event> {
    parse_webhook(&fixture(name))
        .expect("fixture is a webhook")
        .events()
}

fn only_message(name: &str) -> (Option<Contact>, Message) {
    match events(name).as_slice() {
        [
            Event::Message {
                contact,
                message,
                metadata,
                ..
            },
        ] => {
            assert_eq!(metadata.phone_number_id, "106540352242922");
            (contact.clone(), message.clone())
        }
        other => panic!("{name}: expected one message, got {other:?}"),
    }
}

#[test]
fn every_message_type_is_typed() {
    type Check = fn(&Content) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        (
            "text",
            "text",
            |c| matches!(c, Content::Text(t) if t.body.contains("Ibuprofen")),
        ),
        (
            "image",
            "image",
            |c| matches!(c, Content::Image(m) if m.caption.as_deref() == Some("Mein Rezept") && m.id.as_deref() == Some("1234567890123456")),
        ),
        (
            "video",
            "video",
            |c| matches!(c, Content::Video(m) if m.mime_type.as_deref() == Some("video/mp4")),
        ),
        (
            "audio_voice",
            "audio",
            |c| matches!(c, Content::Audio(m) if m.voice == Some(true)),
        ),
        (
            "sticker",
            "sticker",
            |c| matches!(c, Content::Sticker(m) if m.animated == Some(false)),
        ),
        (
            "document",
            "document",
            |c| matches!(c, Content::Document(m) if m.filename.as_deref() == Some("medikationsplan.pdf")),
        ),
        (
            "location",
            "location",
            |c| matches!(c, Content::Location(l) if (l.latitude - 52.520008).abs() < 1e-9 && l.name.as_deref() == Some("Zuhause")),
        ),
        (
            "contacts",
            "contacts",
            |c| matches!(c, Content::Contacts(v) if v.len() == 1),
        ),
        (
            "interactive_button",
            "interactive",
            |c| matches!(c, Content::Interactive(Interactive::ButtonReply { button_reply }) if button_reply.id == "pickup_today"),
        ),
        (
            "interactive_list",
            "interactive",
            |c| matches!(c, Content::Interactive(Interactive::ListReply { list_reply }) if list_reply.description.as_deref() == Some("Abholung")),
        ),
        (
            "interactive_nfm",
            "interactive",
            |c| matches!(c, Content::Interactive(Interactive::NfmReply { nfm_reply }) if nfm_reply["response_json"].is_string()),
        ),
        (
            "button",
            "button",
            |c| matches!(c, Content::Button(b) if b.payload == "STOP_PROMOS"),
        ),
        (
            "reaction",
            "reaction",
            |c| matches!(c, Content::Reaction(r) if r.emoji.as_deref() == Some("\u{1F44D}")),
        ),
        (
            "reaction_removed",
            "reaction",
            |c| matches!(c, Content::Reaction(r) if r.emoji.is_none() && r.message_id == "wamid.OUTBOUND0001"),
        ),
        (
            "order",
            "order",
            |c| matches!(c, Content::Order(o) if o["product_items"].is_array()),
        ),
        (
            "system",
            "system",
            |c| matches!(c, Content::System(s) if s.kind.as_deref() == Some("user_changed_number")),
        ),
        ("unsupported", "unsupported", |c| {
            matches!(c, Content::Unsupported(_))
        }),
    ];
    for (name, kind, check) in cases {
        let (_, m) = only_message(name);
        assert_eq!(&m.kind, kind, "{name}");
        assert!(check(&m.content), "{name}: {:?}", m.content);
        assert!(m.id.starts_with("wamid."), "{name}");
        assert!(
            m.timestamp > 1_700_000_000,
            "{name}: timestamp is parsed from a string"
        );
    }
}

#[test]
fn context_referral_and_errors() {
    let (contact, m) = only_message("text_reply");
    assert_eq!(
        m.context.and_then(|c| c.id).as_deref(),
        Some("wamid.OUTBOUND0001")
    );
    assert_eq!(
        contact
            .and_then(|c| c.profile)
            .and_then(|p| p.name)
            .as_deref(),
        Some("Erika Mustermann")
    );
    let (_, m) = only_message("unsupported");
    assert_eq!(m.errors[0].code, 131051);
    // The system message has no contacts array: no contact, no panic.
    let (contact, _) = only_message("system");
    assert!(contact.is_none());
}

#[test]
fn unknown_types_are_kept_raw() {
    let (_, m) = only_message("unknown_type");
    assert_eq!(m.kind, "hologram");
    match m.content {
        Content::Unknown(raw) => {
            assert_eq!(raw["hologram"]["shape"], "cube");
            assert_eq!(raw["brand_new_field"], true);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bsuid_only_contacts() {
    let (contact, m) = only_message("bsuid_only");
    let contact = contact.expect("matched by user_id");
    assert_eq!(contact.user_id.as_deref(), Some("DE.1502576394655843"));
    assert!(contact.wa_id.is_none() && m.from.is_none());
    assert_eq!(m.from_user_id.as_deref(), Some("DE.1502576394655843"));
    assert_eq!(
        contact.profile.and_then(|p| p.username).as_deref(),
        Some("kundin42")
    );
}

#[test]
fn statuses_with_pricing_errors_and_every_word() {
    for (name, want) in [
        ("status_sent", DeliveryStatus::Sent),
        ("status_delivered", DeliveryStatus::Delivered),
        ("status_read", DeliveryStatus::Read),
        ("status_played", DeliveryStatus::Played),
        ("status_failed", DeliveryStatus::Failed),
        ("status_unknown_message", DeliveryStatus::Delivered),
    ] {
        match events(name).as_slice() {
            [Event::Status { status, .. }] => {
                assert_eq!(status.status, want, "{name}");
                if name == "status_sent" {
                    assert_eq!(status.pricing.as_ref().unwrap()["category"], "service");
                    assert!(status.conversation.is_some());
                }
                if name == "status_failed" {
                    assert_eq!(status.errors[0].code, 131047);
                    assert_eq!(
                        status.errors[0].title.as_deref(),
                        Some("Re-engagement message")
                    );
                }
                if name == "status_unknown_message" {
                    assert_eq!(
                        status.recipient_user_id.as_deref(),
                        Some("DE.1502576394655843")
                    );
                }
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(DeliveryStatus::Sent.rank() < DeliveryStatus::Delivered.rank());
    assert!(DeliveryStatus::Delivered.rank() < DeliveryStatus::Read.rank());
}

#[test]
fn value_errors_and_other_fields_are_events() {
    assert!(
        matches!(events("value_errors").as_slice(), [Event::Error { error, .. }] if error.code == 131000)
    );
    match events("template_status").as_slice() {
        [Event::Other { field, value, .. }] => {
            assert_eq!(field, "message_template_status_update");
            assert_eq!(value["event"], "APPROVED");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_post_yields_every_event() {
    let kinds: Vec<&str> = events("multi").iter().map(Event::kind).collect();
    assert_eq!(
        kinds,
        ["message", "message", "status", "message", "other", "status"]
    );
    match &events("multi")[3] {
        Event::Message { contact, .. } => {
            assert_eq!(
                contact.as_ref().and_then(|c| c.wa_id.as_deref()),
                Some("4917600011122")
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_bodies_are_refused_with_a_reason() {
    assert!(matches!(
        parse_webhook(b""),
        Err(PayloadError::NotJson { .. })
    ));
    assert!(matches!(
        parse_webhook(b"{not json"),
        Err(PayloadError::NotJson { .. })
    ));
    assert!(matches!(
        parse_webhook(b"[]"),
        Err(PayloadError::NotWebhook(_))
    ));
    assert!(matches!(
        parse_webhook(b"{}"),
        Err(PayloadError::NotWebhook(_))
    ));
    assert!(matches!(
        parse_webhook(br#"{"object":"page","entry":[]}"#),
        Err(PayloadError::NotWebhook(_))
    ));
    assert!(matches!(
        parse_webhook(br#"{"object":"whatsapp_business_account","entry":{}}"#),
        Err(PayloadError::NotWebhook(_))
    ));
    assert!(matches!(
        parse_webhook(
            br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"value":1}]}]}"#
        ),
        Err(PayloadError::NotWebhook(_))
    ));
    // Empty but well-formed: accepted, nothing in it.
    assert!(
        parse_webhook(br#"{"object":"whatsapp_business_account","entry":[]}"#)
            .unwrap()
            .events()
            .is_empty()
    );
}

#[test]
fn messages_without_ids_are_kept_as_unrecognized() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"9"},"messages":[{"type":"text","text":{"body":"x"}}],
        "statuses":[{"id":"wamid.1","status":"teleported","timestamp":"1"}]}}]}]}"#;
    let ev = parse_webhook(body).unwrap().events();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| matches!(e, Event::Unrecognized { .. })));
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("messages".to_owned()),
            Just("text".to_owned()),
            Just("whatsapp_business_account".to_owned()),
            ".{0,12}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("object".to_owned()),
            Just("entry".to_owned()),
            Just("changes".to_owned()),
            Just("field".to_owned()),
            Just("value".to_owned()),
            Just("messages".to_owned()),
            Just("statuses".to_owned()),
            Just("contacts".to_owned()),
            Just("errors".to_owned()),
            Just("id".to_owned()),
            Just("type".to_owned()),
            Just("text".to_owned()),
            Just("status".to_owned()),
            Just("timestamp".to_owned()),
            Just("metadata".to_owned()),
            Just("interactive".to_owned()),
            "[a-z_]{1,8}"
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(w) = parse_webhook(&bytes) {
            let _ = w.events();
        }
    }

    #[test]
    fn parsing_webhook_shaped_json_never_panics(v in json_value()) {
        let wrapped = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": v.clone()}]}]});
        for candidate in [v.clone(), wrapped.clone()] {
            // The receiver's quick check and the router's parse agree on what is a webhook.
            prop_assert_eq!(validate_webhook(&candidate).is_ok(), webhook_from_value(candidate.clone()).is_ok());
        }
        for candidate in [v, wrapped] {
            let bytes = serde_json::to_vec(&candidate).unwrap();
            if let Ok(w) = parse_webhook(&bytes) {
                for e in w.events() {
                    let _ = e.phone_number_id();
                }
            }
        }
    }
}

#[test]
fn identity_changes_are_read_with_both_identities() {
    let (_, number) = only_message("system");
    let change = number.content.identity_change().expect("a number change");
    assert_eq!(change.wa_id.as_deref(), Some("4915187654321"));
    assert_eq!(number.from.as_deref(), Some("4915112345678"));
    let (_, bsuid) = only_message("system_user_changed_user_id");
    let change = bsuid.content.identity_change().expect("a BSUID change");
    assert_eq!(change.user_id.as_deref(), Some("DE.2817730591287364"));
    assert_eq!(bsuid.from_user_id.as_deref(), Some("DE.1502576394655843"));

    let value = match events("user_id_update").as_slice() {
        [Event::Other { field, value, .. }] if field == "user_id_update" => value.clone(),
        other => panic!("{other:?}"),
    };
    let updates = user_id_updates(&value);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].old.bsuid.as_deref(), Some("DE.1502576394655843"));
    assert_eq!(updates[0].new.bsuid.as_deref(), Some("DE.2817730591287364"));
    assert_eq!(updates[0].new.wa_id.as_deref(), Some("4915187654321"));
    assert_eq!(updates[0].timestamp, 1_764_300_019);
}

#[test]
fn coexistence_fields_are_messages_of_the_customers_conversation() {
    match events("smb_message_echoes").as_slice() {
        [Event::Echo { echo, .. }] => {
            assert!(echo.from_business);
            assert_eq!(echo.origin, Origin::BusinessApp);
            assert_eq!(echo.customer.wa_id.as_deref(), Some("4915112345678"));
            assert_eq!(echo.message.id, "wamid.ECHO0001");
        }
        other => panic!("{other:?}"),
    }
    let history = events("history");
    let froms: Vec<(bool, Option<DeliveryStatus>)> = history
        .iter()
        .map(|e| match e {
            Event::Echo { echo, .. } => {
                assert_eq!(echo.origin, Origin::History);
                assert_eq!(echo.customer.wa_id.as_deref(), Some("4915112345678"));
                (echo.from_business, echo.status)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        froms,
        [
            (false, Some(DeliveryStatus::Read)),
            (true, Some(DeliveryStatus::Read))
        ]
    );
    match events("smb_app_state_sync").as_slice() {
        [
            Event::ContactSync {
                customer,
                name,
                removed,
                ..
            },
        ] => {
            assert_eq!(customer.wa_id.as_deref(), Some("4915112345678"));
            assert_eq!(name.as_deref(), Some("Erika Mustermann"));
            assert!(!removed);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn preferences_template_updates_and_bsuid_statuses_are_read() {
    let value = match events("user_preferences").as_slice() {
        [Event::Other { field, value, .. }] if field == "user_preferences" => value.clone(),
        other => panic!("{other:?}"),
    };
    let prefs = user_preferences(&value);
    assert_eq!(prefs.len(), 1);
    assert!(prefs[0].stop);
    assert_eq!(prefs[0].category, "marketing_messages");
    for (name, field, key, want) in [
        (
            "template_category_update",
            "template_category_update",
            "new_category",
            "MARKETING",
        ),
        (
            "template_quality_update",
            "message_template_quality_update",
            "new_quality_score",
            "YELLOW",
        ),
    ] {
        match events(name).as_slice() {
            [
                Event::Other {
                    field: f, value, ..
                },
            ] => {
                assert_eq!(f, field);
                assert_eq!(value[key], want);
            }
            other => panic!("{other:?}"),
        }
    }
    match events("status_bsuid_only").as_slice() {
        [Event::Status { status, .. }] => {
            assert_eq!(status.recipient_id, None);
            assert_eq!(
                status.recipient_user_id.as_deref(),
                Some("DE.1502576394655843")
            );
            assert_eq!(
                Identities::of_status(status).primary(),
                Some(relay_core::ids::Identity::Bsuid("DE.1502576394655843"))
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Every fixture has its source noted in tests/fixtures/SOURCES.md.
#[test]
fn every_fixture_names_its_source() {
    let dir = format!("{}/../../tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let sources = std::fs::read_to_string(format!("{dir}/SOURCES.md")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert!(
                sources.contains(&format!("`{name}`")),
                "{name} has no source in SOURCES.md"
            );
        }
    }
}
