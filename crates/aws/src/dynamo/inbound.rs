//! [`InboundLog`] on DynamoMessageStore: what the router writes.

use super::*;

#[async_trait]
impl InboundLog for DynamoMessageStore {
    async fn resolve_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
        proposed: &ContactId,
        expires_at: i64,
    ) -> Result<ContactId, StoreError> {
        let mut known = Vec::with_capacity(identity_keys.len());
        for key in identity_keys {
            known.push(self.get_identity(tenant, key).await?);
        }
        let found = known.iter().flatten().next().map(|(c, _)| c.clone());
        let mut contact = found.clone().unwrap_or_else(|| proposed.clone());
        for (i, key) in identity_keys.iter().enumerate() {
            // Already this contact's and kept at least as long as this message: nothing to write.
            if let Some((owner, until)) = &known[i]
                && owner == &contact
                && *until >= expires_at
            {
                continue;
            }
            // if_not_exists makes concurrent twins agree: the first writer's contact wins.
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(identity_pk(tenant, key)))
                .key("sk", s("ID"))
                .update_expression(
                    "SET contact_id = if_not_exists(contact_id, :c), expires_at = :e",
                )
                .expression_attribute_values(":c", s(contact.as_str()))
                .expression_attribute_values(":e", n(expires_at + IDENTITY_SLACK_SECS))
                .return_values(ReturnValue::AllNew)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error("UpdateItem", &e)))?;
            let winner = out
                .attributes
                .as_ref()
                .and_then(|a| get_s(a, "contact_id"))
                .map(ContactId::parse)
                .transpose()
                .map_err(|_| corrupt("invalid contact id"))?;
            if let Some(w) = winner
                && i == 0
                && found.is_none()
            {
                contact = w;
            }
        }
        Ok(contact)
    }

    async fn link_identities(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        // Each key not yet anyone's.
        let mut mine = Vec::new();
        for key in identity_keys {
            let owner = self
                .resolve_contact(tenant, std::slice::from_ref(key), contact, expires_at)
                .await?;
            if &owner == contact {
                mine.push(key.clone());
            }
        }
        if mine.is_empty() {
            return Ok(());
        }
        // The profile lists them (erasure reads the list); a contact without a profile has
        // nothing to erase yet.
        let mut v = Item::new();
        v.insert(":ik".into(), AttributeValue::Ss(mine));
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "ADD identity_keys :ik",
            "attribute_exists(pk)",
            v,
        )
        .await?;
        Ok(())
    }

    async fn rename_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        name: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(contact_pk(tenant, contact)))
            .key("sk", s(PROFILE))
            .update_expression("SET #name = :name")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":name", s(name))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
        }
    }

    async fn find_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
    ) -> Result<Option<ContactId>, StoreError> {
        for key in identity_keys {
            if let Some((c, _)) = self.get_identity(tenant, key).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    async fn record_inbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
    ) -> Result<Recorded, StoreError> {
        let pk = contact_pk(tenant, &message.contact_id);
        let sk = message_sk(message.timestamp, &message.wamid_key);
        // The wamid's pointer first, on its own (one write unit, not two inside a transaction):
        // written if absent, rewritten if it already leads to this message (an earlier attempt
        // stopped after it); a pointer to another message is a wamid recorded elsewhere.
        let mut pointer = Item::new();
        pointer.insert("pk".into(), s(wamid_pk(tenant, &message.wamid_key)));
        pointer.insert("sk".into(), s(POINTER));
        pointer.insert("msg_pk".into(), s(&pk));
        pointer.insert("msg_sk".into(), s(&sk));
        pointer.insert("expires_at".into(), n(message.expires_at));
        let mut same = Item::new();
        same.insert(":mp".into(), s(&pk));
        same.insert(":ms".into(), s(&sk));
        if !self
            .put_if_with(
                pointer,
                "attribute_not_exists(pk) OR (msg_pk = :mp AND msg_sk = :ms)",
                same,
            )
            .await?
        {
            return Err(StoreError::Unavailable(
                "PutItem: the wamid is recorded under another message".into(),
            ));
        }
        // Usually the newest message of its contact: the transaction moves the last activity
        // itself, on the condition that it only moves forward — one request. A message older
        // than what the profile holds (arrived late, or a reply was newer) fails only that
        // condition; it is then recorded without the moves, and they are applied one by one.
        let recorded = match self
            .inbound_transaction(tenant, message, contact, &pk, &sk, true)
            .await?
        {
            Transacted::Done => return Ok(Recorded::New),
            Transacted::Duplicate => Recorded::Duplicate,
            Transacted::NotNewest => {
                match self
                    .inbound_transaction(tenant, message, contact, &pk, &sk, false)
                    .await?
                {
                    Transacted::Duplicate => Recorded::Duplicate,
                    _ => Recorded::New,
                }
            }
        };
        // Last activity only moves forward. Done on duplicates too: idempotent, and it completes
        // the work of an attempt that crashed between the fallback transaction and this update.
        let profile_pk = contact_pk(tenant, &contact.contact_id);
        let mut v = Item::new();
        v.insert(":ts".into(), n(contact.last_inbound_at));
        self.update_if(
            profile_pk.clone(),
            PROFILE,
            "SET last_inbound_at = :ts",
            "attribute_not_exists(last_inbound_at) OR last_inbound_at < :ts",
            v.clone(),
        )
        .await?;
        let ts = contact.last_message_at;
        v.insert(":ts".into(), n(ts));
        v.insert(":gs".into(), s(format!("{ts:012}#{}", contact.contact_id)));
        self.update_if(
            profile_pk,
            PROFILE,
            "SET last_message_at = :ts, gsi1sk = :gs",
            "attribute_not_exists(last_message_at) OR last_message_at < :ts",
            v,
        )
        .await?;
        Ok(recorded)
    }

    async fn record_status(
        &self,
        tenant: &TenantId,
        status: &StoredStatus,
    ) -> Result<Recorded, StoreError> {
        let pk = wamid_pk(tenant, &status.wamid_key);
        let body =
            serde_json::to_string(status).map_err(|_| corrupt("status does not serialise"))?;
        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        item.insert("sk".into(), s(format!("ST#{}", status.status.as_str())));
        item.insert("body".into(), s(body));
        item.insert("timestamp".into(), n(status.timestamp));
        item.insert("expires_at".into(), n(status.expires_at));
        let recorded = self.put_new(item).await?;
        // Applied on duplicates too (idempotent), for the same reason as in record_inbound.
        if let Some(pointer) = self.get(pk, POINTER).await? {
            let (Some(msg_pk), Some(msg_sk)) =
                (get_s(&pointer, "msg_pk"), get_s(&pointer, "msg_sk"))
            else {
                return Err(corrupt("pointer without target"));
            };
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(msg_pk))
                .key("sk", s(msg_sk))
                .condition_expression("attribute_exists(pk) AND (attribute_not_exists(status_rank) OR status_rank < :r)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":r", n(i64::from(status.status.rank())))
                .expression_attribute_values(":s", s(status.status.as_str()));
            let mut set = "SET status_rank = :r, #status = :s".to_owned();
            if let Some(error) = status.errors.first() {
                request = request
                    .expression_attribute_names("#error", "error")
                    .expression_attribute_values(
                        ":err",
                        s(serde_json::to_string(error).unwrap_or_default()),
                    );
                set.push_str(", #error = :err");
            }
            match request.update_expression(set).send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
            }
        }
        Ok(recorded)
    }

    async fn record_event(
        &self,
        tenant: &TenantId,
        event: &StoredEvent,
    ) -> Result<Recorded, StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("T#{tenant}#EV")));
        item.insert("sk".into(), s(&event.key));
        item.insert("kind".into(), s(&event.kind));
        item.insert(
            "body".into(),
            s(serde_json::to_string(event).unwrap_or_default()),
        );
        item.insert("expires_at".into(), n(event.expires_at));
        self.put_new(item).await
    }

    async fn quarantine(&self, q: &Quarantined) -> Result<Recorded, StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s("QUARANTINE"));
        item.insert("sk".into(), s(format!("Q#{}", q.key)));
        item.insert("received_at".into(), n(q.received_at));
        item.insert(
            "body".into(),
            s(serde_json::to_string(q).unwrap_or_default()),
        );
        item.insert("expires_at".into(), n(q.expires_at));
        self.put_new(item).await
    }

    async fn record_consent(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &ConsentEntry,
    ) -> Result<Recorded, StoreError> {
        let pk = contact_pk(tenant, contact);
        let sk = format!("L#{}", entry.key);
        // The conversation's first entry is offered with every new message and is there after
        // the first: a consistent read (one read unit) finds it for a fifth of what a refused
        // conditional put (one write unit) costs.
        if entry.key == FIRST_CONTACT_KEY && self.get(pk.clone(), &sk).await?.is_some() {
            return Ok(Recorded::Duplicate);
        }
        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        // Keyed by the entry's key alone, so an entry is recorded once whatever its time.
        item.insert("sk".into(), s(sk));
        item.insert(
            "body".into(),
            s(serde_json::to_string(entry).unwrap_or_default()),
        );
        item.insert("expires_at".into(), n(entry.expires_at));
        let recorded = self.put_new(item).await?;
        if !entry.event.sets_opt_out() {
            return Ok(recorded);
        }
        // The newest entry decides, whatever the arrival order; repeated on duplicates (idempotent).
        let mut v = Item::new();
        v.insert(":at".into(), n(entry.at));
        v.insert(
            ":o".into(),
            AttributeValue::Bool(entry.event == ConsentEvent::OptedOut),
        );
        self.update_if(
            pk,
            PROFILE,
            "SET opted_out = :o, consent_at = :at",
            "attribute_exists(pk) AND (attribute_not_exists(consent_at) OR consent_at <= :at)",
            v,
        )
        .await?;
        Ok(recorded)
    }

    async fn claim_away_reply(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
        interval: i64,
    ) -> Result<bool, StoreError> {
        let mut v = Item::new();
        v.insert(":now".into(), n(now));
        v.insert(":cut".into(), n(now - interval));
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "SET away_replied_at = :now",
            "attribute_exists(pk) AND (attribute_not_exists(away_replied_at) OR away_replied_at <= :cut)",
            v,
        )
        .await
    }
}

/// How an inbound message's transaction ended.
enum Transacted {
    Done,
    /// The message is there already.
    Duplicate,
    /// Only the forward-only move of the last activity failed: the profile holds newer times.
    NotNewest,
}

impl DynamoMessageStore {
    /// The message and the contact's counters in one transaction; with `moves`, also the
    /// last activity, on the condition that it moves forward.
    async fn inbound_transaction(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
        pk: &str,
        sk: &str,
        moves: bool,
    ) -> Result<Transacted, StoreError> {
        let body =
            serde_json::to_string(message).map_err(|_| corrupt("message does not serialise"))?;
        let put_message = Put::builder()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("sk", s(sk))
            .item("body", s(body))
            .item("expires_at", n(message.expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|_| corrupt("put"))?;
        let mut set = vec![
            "phone_number_id = :pn",
            "contact_id = :c",
            "expires_at = :e",
            "gsi1pk = :g",
        ];
        if moves {
            set.extend([
                "last_inbound_at = :ts0",
                "last_message_at = :tm0",
                "gsi1sk = :gs0",
            ]);
        } else {
            // A new contact is listed with its window already open: its first message's time
            // is set in the same transaction that makes it visible. (The forward-only updates
            // after it move them later; between the two, a reader saw a conversation without
            // a window and refused a reply as "window closed".)
            set.extend([
                "last_inbound_at = if_not_exists(last_inbound_at, :ts0)",
                "last_message_at = if_not_exists(last_message_at, :tm0)",
                "gsi1sk = if_not_exists(gsi1sk, :gs0)",
            ]);
        }
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(contact_pk(tenant, &contact.contact_id)))
            .key("sk", s(PROFILE))
            .expression_attribute_values(":c", s(contact.contact_id.as_str()))
            .expression_attribute_values(":e", n(contact.expires_at))
            .expression_attribute_values(":g", s(conv_gsi_pk(tenant)))
            .expression_attribute_values(":ts0", n(contact.last_inbound_at))
            .expression_attribute_values(":tm0", n(contact.last_message_at))
            .expression_attribute_values(
                ":gs0",
                s(format!(
                    "{:012}#{}",
                    contact.last_message_at, contact.contact_id
                )),
            )
            .expression_attribute_values(":one", n(i64::from(contact.unread)))
            .expression_attribute_values(":pn", s(&contact.phone_number_id));
        if moves {
            update = update.condition_expression(
                "(attribute_not_exists(last_inbound_at) OR last_inbound_at <= :ts0) \
                 AND (attribute_not_exists(last_message_at) OR last_message_at <= :tm0)",
            );
        }
        for (attr, placeholder, value) in [
            ("name", ":name", &contact.name),
            ("wa_id", ":wa", &contact.wa_id),
            ("user_id", ":uid", &contact.user_id),
            ("username", ":un", &contact.username),
            ("parent_user_id", ":puid", &contact.parent_user_id),
        ] {
            if let Some(v) = value {
                update = update.expression_attribute_values(placeholder, s(v));
                set.push(match attr {
                    "name" => "#name = :name",
                    "wa_id" => "wa_id = :wa",
                    "user_id" => "user_id = :uid",
                    "parent_user_id" => "parent_user_id = :puid",
                    _ => "username = :un",
                });
            }
        }
        if contact.name.is_some() {
            update = update.expression_attribute_names("#name", "name");
        }
        let mut add = "ADD unread :one".to_owned();
        if !contact.identity_keys.is_empty() {
            update = update.expression_attribute_values(
                ":ik",
                AttributeValue::Ss(contact.identity_keys.clone()),
            );
            add.push_str(", identity_keys :ik");
        }
        let update = update
            .update_expression(format!("SET {} {add}", set.join(", ")))
            .build()
            .map_err(|_| corrupt("update"))?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_message).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Transacted::Done),
            Err(e) => {
                let failed = condition_failures(&e);
                let (message, profile) = (
                    failed.first().copied().unwrap_or(false),
                    failed.get(1).copied().unwrap_or(false),
                );
                if message {
                    // "Already there" only if the message really is: a transaction cancelled
                    // by a concurrent twin must be retried, never taken as done.
                    if self.get(pk.to_owned(), sk).await?.is_none() {
                        return Err(StoreError::Unavailable(
                            "TransactWriteItems: cancelled by a concurrent write".into(),
                        ));
                    }
                    Ok(Transacted::Duplicate)
                } else if profile && moves {
                    Ok(Transacted::NotNewest)
                } else {
                    Err(StoreError::Unavailable(sdk_error("TransactWriteItems", &e)))
                }
            }
        }
    }
}
