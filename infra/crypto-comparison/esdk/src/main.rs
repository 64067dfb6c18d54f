use aws_db_esdk::CryptoAction;
use aws_db_esdk::dynamodb::types::DynamoDbTableEncryptionConfig;
use aws_db_esdk::intercept::DbEsdkInterceptor;
use aws_db_esdk::material_providers::client;
use aws_db_esdk::material_providers::types::DbeAlgorithmSuiteId;
use aws_db_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use aws_db_esdk::types::dynamo_db_tables_encryption_config::DynamoDbTablesEncryptionConfig;
use std::collections::HashMap;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = std::time::Instant::now();
    let mat_prov = client::Client::from_conf(MaterialProvidersConfig::builder().build()?)?;
    let kms_keyring = mat_prov
        .create_aws_kms_mrk_multi_keyring()
        .generator("arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-0000-0000-000000000000")
        .send()
        .await?;
    let actions = HashMap::from([
        ("part".to_string(), CryptoAction::SignOnly),
        ("sort".to_string(), CryptoAction::SignOnly),
        ("body".to_string(), CryptoAction::EncryptAndSign),
    ]);
    let table_config = DynamoDbTableEncryptionConfig::builder()
        .logical_table_name("relay")
        .partition_key_name("part")
        .sort_key_name("sort")
        .attribute_actions_on_encrypt(actions)
        .keyring(kms_keyring)
        .algorithm_suite_id(DbeAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKeyEcdsaP384SymsigHmacSha384)
        .build()?;
    let configs = DynamoDbTablesEncryptionConfig::builder()
        .table_encryption_configs(HashMap::from([("relay".to_string(), table_config)]))
        .build()?;
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("eu-central-1"))
        .interceptor(DbEsdkInterceptor::new(configs)?)
        .build();
    let _ddb = aws_sdk_dynamodb::Client::from_conf(conf);
    println!("init {:?}", t0.elapsed());
    Ok(())
}
