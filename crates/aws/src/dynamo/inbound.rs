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
        send_update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(contact_pk(tenant, contact)))
                .key("sk", s(PROFILE))
                .update_expression("SET #name = :name")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#name", "name")
                .expression_attribute_values(":name", s(name)),
        )
        .await
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
        if !self.put_pointer(pointer).await? {
            return Err(StoreError::Unavailable(
                "PutItem: the wamid is recorded under another message".into(),
            ));
        }
        // The message on its own, on the condition that it is not there yet (one write unit).
        let body =
            serde_json::to_string(message).map_err(|_| corrupt("message does not serialise"))?;
        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        item.insert("sk".into(), s(&sk));
        item.insert("body".into(), s(body));
        item.insert("expires_at".into(), n(message.expires_at));
        let recorded = self.put_new(item).await?;
        // Then the contact, in updates that can be repeated: its unread mark is the message's
        // own key in a set, so a retry adds nothing. A duplicate still applies them (an earlier
        // attempt may have stopped before), but does not mark a message unread that staff have
        // read since.
        let mark = match recorded {
            Recorded::New => contact.unread,
            Recorded::Duplicate => contact.unread && !self.read_since(tenant, message).await?,
        };
        // Usually the newest message of its contact: the update moves the last activity itself,
        // on the condition that it only moves forward. A message older than what the profile
        // holds (arrived late, or a reply was newer) fails only that condition; it is then
        // applied without the moves, and they follow one by one.
        if self
            .update_contact(tenant, message, contact, mark, true)
            .await?
        {
            return Ok(recorded);
        }
        self.update_contact(tenant, message, contact, mark, false)
            .await?;
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
            // A status older than the message's is kept (above) but moves nothing.
            send_update_if(request.update_expression(set)).await?;
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

/// The element of a profile's `unread_ids` set that stands for a message: a prefix of its
/// wamid key (48 bits: only counted, never looked up).
pub(super) fn unread_mark(message: &StoredMessage) -> String {
    message.wamid_key.chars().take(12).collect()
}

impl DynamoMessageStore {
    /// Whether staff have read the conversation since `message` (its duplicate then leaves the
    /// unread marks alone). Only on the duplicate path: one consistent read.
    async fn read_since(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
    ) -> Result<bool, StoreError> {
        let profile = self
            .get(contact_pk(tenant, &message.contact_id), PROFILE)
            .await?;
        Ok(profile
            .as_ref()
            .and_then(|p| get_n(p, "read_upto"))
            .is_some_and(|upto| upto >= message.timestamp))
    }

    /// The contact's part of an inbound message in one UpdateItem: channel, names, expiry,
    /// identity keys, the unread mark when `mark`; with `moves`, also the last activity, on the
    /// condition that it moves forward (false: that condition failed). Without `moves`, a new
    /// contact is listed with its window already open: its first message's time is set in the
    /// same update that makes it visible, never later (a reader between the two saw a
    /// conversation without a window and refused a reply as "window closed").
    async fn update_contact(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
        mark: bool,
        moves: bool,
    ) -> Result<bool, StoreError> {
        let mut set = vec![
            "phone_number_id = :pn",
            "contact_id = :c",
            "expires_at = :e",
            "gsi1pk = :g",
        ];
        set.extend(if moves {
            [
                "last_inbound_at = :ts0",
                "last_message_at = :tm0",
                "gsi1sk = :gs0",
            ]
        } else {
            [
                "last_inbound_at = if_not_exists(last_inbound_at, :ts0)",
                "last_message_at = if_not_exists(last_message_at, :tm0)",
                "gsi1sk = if_not_exists(gsi1sk, :gs0)",
            ]
        });
        let mut values = Item::new();
        values.insert(":c".into(), s(contact.contact_id.as_str()));
        values.insert(":e".into(), n(contact.expires_at));
        values.insert(":g".into(), s(conv_gsi_pk(tenant)));
        values.insert(":ts0".into(), n(contact.last_inbound_at));
        values.insert(":tm0".into(), n(contact.last_message_at));
        values.insert(
            ":gs0".into(),
            s(format!(
                "{:012}#{}",
                contact.last_message_at, contact.contact_id
            )),
        );
        values.insert(":pn".into(), s(&contact.phone_number_id));
        for (placeholder, assignment, value) in [
            (":name", "#name = :name", &contact.name),
            (":wa", "wa_id = :wa", &contact.wa_id),
            (":uid", "user_id = :uid", &contact.user_id),
            (":un", "username = :un", &contact.username),
            (":puid", "parent_user_id = :puid", &contact.parent_user_id),
        ] {
            if let Some(v) = value {
                values.insert(placeholder.into(), s(v));
                set.push(assignment);
            }
        }
        let mut add = Vec::new();
        if mark {
            values.insert(":u".into(), AttributeValue::Ss(vec![unread_mark(message)]));
            add.push("unread_ids :u");
        }
        if !contact.identity_keys.is_empty() {
            values.insert(
                ":ik".into(),
                AttributeValue::Ss(contact.identity_keys.clone()),
            );
            add.push("identity_keys :ik");
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !add.is_empty() {
            expression.push_str(&format!(" ADD {}", add.join(", ")));
        }
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(contact_pk(tenant, &contact.contact_id)))
            .key("sk", s(PROFILE))
            .update_expression(expression)
            .set_condition_expression(moves.then(|| {
                "(attribute_not_exists(last_inbound_at) OR last_inbound_at <= :ts0) \
                 AND (attribute_not_exists(last_message_at) OR last_message_at <= :tm0)"
                    .to_owned()
            }))
            .set_expression_attribute_names(
                contact
                    .name
                    .is_some()
                    .then(|| HashMap::from([("#name".to_owned(), "name".to_owned())])),
            )
            .set_expression_attribute_values(Some(values));
        send_update_if(request).await
    }
}
