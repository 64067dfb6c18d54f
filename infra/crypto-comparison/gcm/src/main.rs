use aes_gcm::aead::{Aead, KeyInit, OsRng, AeadCore};
use aes_gcm::Aes256Gcm;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = std::time::Instant::now();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("eu-central-1"))
        .build();
    let kms = aws_sdk_kms::Client::from_conf(conf);
    let _req = kms.generate_data_key().key_id("alias/x").key_spec(aws_sdk_kms::types::DataKeySpec::Aes256);
    let dconf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("eu-central-1"))
        .build();
    let _ddb = aws_sdk_dynamodb::Client::from_conf(dconf);
    let key = Aes256Gcm::generate_key(OsRng);
    let cipher = Aes256Gcm::new(&key);
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = cipher.encrypt(&nonce, b"hello".as_ref()).map_err(|_| "enc")?;
    println!("init {:?} {}", t0.elapsed(), ct.len());
    Ok(())
}
