//! [`OutboundLedger`] on DynamoMessageStore: replies and their sending.

use super::*;

#[async_trait]
impl OutboundLedger for DynamoMessageStore {
    async fn clear_unread(&self, tenant: &TenantId, contact: &ContactId) -> Result<(), StoreError> {
        let mut v = Item::new();
        v.insert(":zero".into(), n(0));
        // The newest message's time is kept as read: a late duplicate of a message up to then
        // does not mark it unread again (inbound.rs).
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "SET read_upto = if_not_exists(last_message_at, :zero) REMOVE unread, unread_ids",
            "attribute_exists(pk)",
            v,
        )
        .await
        .map(|_| ())
    }

    async fn set_send_backoff(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        until: i64,
    ) -> Result<(), StoreError> {
        let mut v = Item::new();
        v.insert(":u".into(), n(until));
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "SET send_backoff_until = :u",
            "attribute_exists(pk) AND (attribute_not_exists(send_backoff_until) OR send_backoff_until < :u)",
            v,
        )
        .await
        .map(|_| ())
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let pk = contact_pk(tenant, &message.contact_id);
        let sk = message_sk(message.timestamp, &message.wamid_key);
        let body =
            serde_json::to_string(message).map_err(|_| corrupt("message does not serialise"))?;
        let idem_pk = idempotency.map(|i| format!("T#{tenant}#IDEM#{}", i.key_hash));
        let mut message_item = Item::new();
        if let Some(idem_pk) = &idem_pk {
            // Erasure deletes the idempotency item through this.
            message_item.insert("idem_pk".into(), s(idem_pk));
        }
        for (k, v) in [
            ("pk", s(&pk)),
            ("sk", s(&sk)),
            ("body", s(body)),
            ("status", s(DeliveryStatus::Queued.as_str())),
            ("status_rank", n(0)),
            ("send_lease_until", n(0)),
            ("attempts", n(0)),
            ("expires_at", n(message.expires_at)),
        ] {
            message_item.insert(k.into(), v);
        }
        let mut pointer_item = Item::new();
        for (k, v) in [
            ("pk", s(wamid_pk(tenant, &message.wamid_key))),
            ("sk", s(POINTER)),
            ("msg_pk", s(&pk)),
            ("msg_sk", s(&sk)),
            ("expires_at", n(message.expires_at)),
        ] {
            pointer_item.insert(k.into(), v);
        }
        let existing = CreateOutcome::Existing {
            message_key: message.wamid_key.clone(),
            request_hash: None,
        };
        match (idempotency, &idem_pk) {
            (Some(idem), Some(idem_pk)) => {
                // The idempotency key, the message and its pointer in one transaction: the key
                // must never name a message that is not there.
                let put = |item: Item| {
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(|_| corrupt("put"))
                };
                let mut idem_item = Item::new();
                idem_item.insert("pk".into(), s(idem_pk));
                idem_item.insert("sk".into(), s("IDEM"));
                idem_item.insert("message_key".into(), s(&message.wamid_key));
                idem_item.insert("request_hash".into(), s(&idem.request_hash));
                idem_item.insert("expires_at".into(), n(message.expires_at));
                let result = self
                    .client
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().put(put(idem_item)?).build())
                    .transact_items(TransactWriteItem::builder().put(put(message_item)?).build())
                    .transact_items(TransactWriteItem::builder().put(put(pointer_item)?).build())
                    .send()
                    .await;
                if let Err(e) = result {
                    let reasons = condition_failures(&e);
                    if !reasons.iter().any(|r| *r) {
                        return Err(StoreError::Unavailable(sdk_error("TransactWriteItems", &e)));
                    }
                    if reasons.first() == Some(&true)
                        && let Some(item) = self.get(idem_pk.clone(), "IDEM").await?
                    {
                        return Ok(CreateOutcome::Existing {
                            message_key: get_s(&item, "message_key").unwrap_or_default().to_owned(),
                            request_hash: get_s(&item, "request_hash").map(str::to_owned),
                        });
                    }
                    if self.get(pk.clone(), &sk).await?.is_none() {
                        return Err(StoreError::Unavailable(
                            "TransactWriteItems: cancelled by a concurrent write".into(),
                        ));
                    }
                    return Ok(existing);
                }
            }
            _ => {
                // Without an idempotency key, two single writes (two write units, not four in
                // a transaction), as for an inbound message: the pointer if absent or already
                // leading here (an earlier attempt stopped after it), then the message if absent.
                if !self.put_pointer(pointer_item).await? {
                    return Err(StoreError::Unavailable(
                        "PutItem: the message key is recorded under another message".into(),
                    ));
                }
                if self.put_new(message_item).await? == Recorded::Duplicate {
                    return Ok(existing);
                }
            }
        }
        let mut v = Item::new();
        v.insert(":ts".into(), n(message.timestamp));
        v.insert(
            ":gs".into(),
            s(format!("{:012}#{}", message.timestamp, message.contact_id)),
        );
        self.update_if(
            pk,
            PROFILE,
            "SET last_message_at = :ts, gsi1sk = :gs",
            "attribute_exists(pk) AND (attribute_not_exists(last_message_at) OR last_message_at < :ts)",
            v,
        )
        .await?;
        Ok(CreateOutcome::Created)
    }

    async fn claim_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<Claim, StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(Claim::Missing);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(&sk))
            .update_expression("SET send_lease_until = :lease ADD attempts :one")
            .condition_expression(
                "attribute_exists(pk) AND expires_at > :now AND status_rank = :zero AND send_lease_until <= :now",
            )
            .expression_attribute_values(":lease", n(now + lease_secs))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Claim::Claimed {
                attempt: out
                    .attributes
                    .as_ref()
                    .and_then(|a| get_n(a, "attempts"))
                    .unwrap_or(1) as u32,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                match self.get(pk, &sk).await? {
                    Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                        if get_n(&item, "status_rank").unwrap_or(0) > 0 {
                            Ok(Claim::Done)
                        } else {
                            Ok(Claim::InFlight)
                        }
                    }
                    _ => Ok(Claim::Missing),
                }
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
        }
    }

    async fn complete_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        _contact: &ContactId,
        wamid: &str,
        wamid_key: &str,
    ) -> Result<(), StoreError> {
        let Some((pk, sk, expires_at)) = self.locate_with_expiry(tenant, message_key).await? else {
            return Ok(());
        };
        // The pointer first: a status webhook can arrive before this call returns. It expires
        // with the message.
        let mut item = Item::new();
        item.insert("pk".into(), s(wamid_pk(tenant, wamid_key)));
        item.insert("sk".into(), s(POINTER));
        item.insert("msg_pk".into(), s(&pk));
        item.insert("msg_sk".into(), s(&sk));
        item.insert("expires_at".into(), n(expires_at));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("PutItem", &e)))?;
        // The wamid and the move to `sent` in one update, on the condition that no status
        // arrived first (the usual case); if one did, the wamid alone.
        let mut v = Item::new();
        v.insert(":w".into(), s(wamid));
        v.insert(":wk".into(), s(wamid_key));
        v.insert(":zero".into(), n(0));
        let mut with_status = v.clone();
        with_status.insert(":r".into(), n(1));
        with_status.insert(":s".into(), s(DeliveryStatus::Sent.as_str()));
        let sent = send_update_if(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s(&sk))
                .update_expression(
                    "SET wamid = :w, sent_key = :wk, send_lease_until = :zero, status_rank = :r, #status = :s",
                )
                .condition_expression("attribute_exists(pk) AND status_rank < :r")
                .expression_attribute_names("#status", "status")
                .set_expression_attribute_values(Some(with_status)),
        )
        .await?;
        if !sent {
            self.update_if(
                pk,
                &sk,
                "SET wamid = :w, sent_key = :wk, send_lease_until = :zero",
                "attribute_exists(pk)",
                v,
            )
            .await?;
        }
        Ok(())
    }

    async fn fail_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        error: &ApiError,
    ) -> Result<(), StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(());
        };
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(
                "SET status_rank = :r, #status = :s, #error = :e, send_lease_until = :zero",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":r", n(i64::from(DeliveryStatus::Failed.rank())))
            .expression_attribute_values(":s", s(DeliveryStatus::Failed.as_str()))
            .expression_attribute_values(":e", s(serde_json::to_string(error).unwrap_or_default()))
            .expression_attribute_values(":zero", n(0));
        send_update_if(request).await.map(|_| ())
    }

    async fn release_send(&self, tenant: &TenantId, message_key: &str) -> Result<(), StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(());
        };
        let mut v = Item::new();
        v.insert(":zero".into(), n(0));
        self.update_if(
            pk,
            &sk,
            "SET send_lease_until = :zero",
            "attribute_exists(pk)",
            v,
        )
        .await
        .map(|_| ())
    }
}
