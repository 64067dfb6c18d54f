//! [`ErasureStore`] on DynamoMessageStore: erasure of a contact.

use super::*;

#[async_trait]
impl ErasureStore for DynamoMessageStore {
    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError> {
        let profile = self.get(contact_pk(tenant, contact), PROFILE).await?;
        let mut keys = match profile.as_ref().and_then(|p| p.get("identity_keys")) {
            Some(AttributeValue::Ss(keys)) => keys.clone(),
            _ => Vec::new(),
        };
        keys.sort();
        Ok(keys)
    }

    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError> {
        let pk = contact_pk(tenant, contact);
        // Everything in the contact's partition, expired or not.
        let items = self.partition(pk.clone(), "", i64::MIN).await?;
        let mut erased = ErasedItems::default();
        let mut deletes: Vec<(String, String)> = Vec::new();
        let mut identities: Vec<String> = identity_keys.to_vec();
        let mut profile = None;
        for item in &items {
            let sk = get_s(item, "sk").unwrap_or_default().to_owned();
            if sk == PROFILE {
                if let Some(AttributeValue::Ss(keys)) = item.get("identity_keys") {
                    identities.extend(keys.iter().cloned());
                }
                profile = Some(sk);
                continue;
            }
            if sk.starts_with("M#") {
                erased.messages += 1;
                // The row key's partition (pointer, statuses) and the sent wamid's.
                let row_key = sk.rsplit('#').next().unwrap_or_default();
                let mut partitions = vec![wamid_pk(tenant, row_key)];
                if let Some(k) = get_s(item, "sent_key") {
                    partitions.push(wamid_pk(tenant, k));
                }
                for wpk in partitions {
                    for w in self.partition(wpk.clone(), "", i64::MIN).await? {
                        let wsk = get_s(&w, "sk").unwrap_or_default().to_owned();
                        if wsk.starts_with("ST#") {
                            erased.statuses += 1;
                        } else {
                            erased.index_items += 1;
                        }
                        deletes.push((wpk.clone(), wsk));
                    }
                }
                if let Some(idem) = get_s(item, "idem_pk") {
                    if self.get(idem.to_owned(), "IDEM").await?.is_some() {
                        erased.index_items += 1;
                    }
                    deletes.push((idem.to_owned(), "IDEM".to_owned()));
                }
            } else if sk.starts_with("L#") {
                erased.consent_entries += 1;
            } else if sk.starts_with("N#") {
                erased.notes += 1;
            } else if sk.starts_with("RX#") {
                erased.prescriptions += 1;
            } else if let Some(media_id) = sk.strip_prefix("U#") {
                // An uploaded file's record and its pointer.
                erased.index_items += 2;
                deletes.push((wamid_pk(tenant, media_id), POINTER.to_owned()));
            } else {
                erased.index_items += 1;
            }
            deletes.push((pk.clone(), sk));
        }
        identities.sort();
        identities.dedup();
        for key in &identities {
            let ipk = identity_pk(tenant, key);
            if let Some(item) = self.get(ipk.clone(), "ID").await?
                && get_s(&item, "contact_id") == Some(contact.as_str())
            {
                erased.identities += 1;
                deletes.push((ipk, "ID".to_owned()));
            }
        }
        self.delete_all(deletes).await?;
        // The profile last: it names the identities, so a re-run after a crash finds them.
        if let Some(sk) = profile {
            self.delete_all(vec![(pk, sk)]).await?;
            erased.profile = 1;
        }
        Ok(erased)
    }
}
