//! How long reading a phone photo of a Tokenausdruck takes: a 12-megapixel JPEG, decoded and
//! searched for codes (`cargo bench -p relay-scan`; figures in docs/benchmarks.md).
#![allow(clippy::unwrap_used)]

#[path = "../tests/printout/mod.rs"]
mod printout;

use criterion::{Criterion, criterion_group, criterion_main};
use printout::*;
use relay_scan::{Limits, scan};
use rxing::BarcodeFormat;
use std::hint::black_box;

fn photos(c: &mut Criterion) {
    let t = tokens(3);
    let dm =
        |t: &[relay_core::erezept::Prescription]| code(&payload(t), BarcodeFormat::DATA_MATRIX);
    let sheet = sheet(&[dm(&t[..1]), dm(&t[1..2]), dm(&t[2..3])], 14);
    let printout = jpeg(&photo(&sheet, 4000, 3000, 9.0, 1.0), 85);
    assert_eq!(
        scan(&printout, "image/jpeg", &Limits::default())
            .unwrap()
            .len(),
        3
    );
    let blank = image::GrayImage::from_pixel(400, 300, image::Luma([245]));
    let no_code = jpeg(&photo(&blank, 4000, 3000, 3.0, 1.0), 85);

    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.bench_function("12mp_photo_three_codes", |b| {
        b.iter(|| scan(black_box(&printout), "image/jpeg", &Limits::default()).unwrap())
    });
    // The common case: a photo that is not a prescription (read at half and at full size).
    g.bench_function("12mp_photo_no_code", |b| {
        b.iter(|| scan(black_box(&no_code), "image/jpeg", &Limits::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, photos);
criterion_main!(benches);
