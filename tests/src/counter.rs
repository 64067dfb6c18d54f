//! Counts the AWS API calls a test makes, by operation (`X-Amz-Target`), with the DynamoDB
//! write units they cost: what docs/cost.md is computed from.

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    /// Calls by operation (`DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`, …), plus
    /// `DynamoDB.TransactItems` (items written in transactions).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reset(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Clients whose every call is counted.
    pub fn clients(&self, sdk: &aws_config::SdkConfig) -> relay_aws::Clients {
        relay_aws::Clients {
            dynamo: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk)
                    .interceptor(self.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .interceptor(self.clone())
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(sdk)
                    .interceptor(self.clone())
                    .build(),
            ),
            sdk: sdk.clone(),
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request();
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or("unknown")
            .to_owned();
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if target.ends_with(".TransactWriteItems")
            && let Some(bytes) = request.body().bytes()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
        {
            let n = v["TransactItems"].as_array().map(Vec::len).unwrap_or(0) as u64;
            *calls.entry("DynamoDB.TransactItems".into()).or_default() += n;
        }
        *calls.entry(target).or_default() += 1;
        Ok(())
    }
}
