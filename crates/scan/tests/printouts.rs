//! E-Rezept printouts as customers send them: photographed (rotated, scaled, JPEG-compressed,
//! on a noisy background), with one to three tokens per code or a collective code, as QR, and
//! as PDFs; and hostile files, which cost bounded work and give nothing.
#![allow(clippy::unwrap_used)]

mod printout;

use printout::*;
use relay_scan::{Limits, ScanError, scan};
use rxing::BarcodeFormat;

fn dm(tokens: &[relay_core::erezept::Prescription]) -> rxing::common::BitMatrix {
    code(&payload(tokens), BarcodeFormat::DATA_MATRIX)
}

#[test]
fn a_photographed_printout_gives_its_tokens() {
    let t = tokens(3);
    // A Tokenausdruck: one code per prescription.
    let sheet = sheet(&[dm(&t[..1]), dm(&t[1..2]), dm(&t[2..3])], 6);
    for (degrees, scale, quality) in [
        (0.0, 1.5, 85),
        (17.0, 1.2, 70),
        (-38.0, 1.0, 60),
        (90.0, 1.25, 50),
        (180.0, 0.8, 65),
    ] {
        let photo = photo(&sheet, 1600, 1200, degrees, scale);
        let found = scan(&jpeg(&photo, quality), "image/jpeg", &Limits::default()).unwrap();
        let mut got = found.clone();
        got.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let mut want = t.clone();
        want.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        assert_eq!(
            got, want,
            "rotated {degrees}°, scale {scale}, JPEG {quality}"
        );
    }
}

#[test]
fn a_sheet_of_three_codes_is_read_at_any_tilt() {
    let t = tokens(3);
    let sheet = sheet(&[dm(&t[..1]), dm(&t[1..2]), dm(&t[2..3])], 6);
    let missed: Vec<i32> = (-90..=90)
        .step_by(9)
        .filter(|&degrees| {
            let photo = photo(&sheet, 1600, 1200, f64::from(degrees), 1.1);
            let found = scan(&jpeg(&photo, 70), "image/jpeg", &Limits::default()).unwrap();
            found.len() != 3
        })
        .collect();
    assert!(missed.is_empty(), "not all three codes read at {missed:?}°");
}

#[test]
fn one_code_with_three_tokens_and_a_collective_code_count_each_token_once() {
    let t = tokens(3);
    // The collective code carries all three; so do the single codes: three tokens, not six.
    let sheet = sheet(&[dm(&t), dm(&t[..1]), dm(&t[1..2]), dm(&t[2..3])], 5);
    let found = scan(
        &jpeg(&photo(&sheet, 2000, 1200, 8.0, 1.1), 75),
        "image/jpeg",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    for token in &t {
        assert!(found.contains(token), "{token:?} in {found:?}");
    }
}

#[test]
fn a_qr_code_with_the_same_payload_is_read_too_and_a_png_screenshot_as_well() {
    let t = tokens(2);
    let sheet = sheet(&[code(&payload(&t), BarcodeFormat::QR_CODE)], 6);
    let found = scan(&png(&sheet), "image/png", &Limits::default()).unwrap();
    assert_eq!(found, t);
}

#[test]
fn a_large_phone_photo_is_read() {
    // 12 megapixels, as phones take them; read at half size first.
    let t = tokens(1);
    let sheet = sheet(&[dm(&t)], 14);
    let photo = photo(&sheet, 4000, 3000, 12.0, 1.0);
    let found = scan(&jpeg(&photo, 80), "image/jpeg", &Limits::default()).unwrap();
    assert_eq!(found, t);
}

#[test]
fn a_printout_photographed_from_afar_is_read_at_full_size() {
    // Three pixels a module at 12 megapixels: too small at half size.
    let t = tokens(1);
    let sheet = sheet(&[dm(&t)], 3);
    let photo = photo(&sheet, 4000, 3000, -7.0, 1.0);
    let found = scan(&jpeg(&photo, 90), "image/jpeg", &Limits::default()).unwrap();
    assert_eq!(found, t);
}

#[test]
fn pdfs_give_the_codes_of_their_embedded_images() {
    let t = tokens(3);
    let scanned = jpeg_xobject(&photo(&sheet(&[dm(&t[..1])], 6), 900, 700, 4.0, 1.2), 80);
    let generated = bitmap_xobject(&sheet(&[dm(&t[1..2]), dm(&t[2..3])], 4));
    let file = pdf(vec![scanned, generated]);
    let mut found = scan(&file, "application/pdf", &Limits::default()).unwrap();
    found.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let mut want = t.clone();
    want.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    assert_eq!(found, want);
}

#[test]
fn a_photo_without_a_code_or_with_other_codes_gives_nothing() {
    let blank = photo(
        &image::GrayImage::from_pixel(300, 200, image::Luma([245])),
        800,
        600,
        5.0,
        1.0,
    );
    assert!(
        scan(&jpeg(&blank, 80), "image/jpeg", &Limits::default())
            .unwrap()
            .is_empty()
    );
    // A code with something else in it (a URL, a made-up token with a wrong check number).
    let other = sheet(
        &[
            code("https://example.org/rezept", BarcodeFormat::DATA_MATRIX),
            code(
                "{\"urls\":[\"Task/160.123.456.789.123.59/$accept?ac=777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea\"]}",
                BarcodeFormat::DATA_MATRIX,
            ),
        ],
        6,
    );
    assert!(
        scan(&png(&other), "image/png", &Limits::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn hostile_files_are_refused_with_bounded_work() {
    let limits = Limits::default();
    // A PNG that claims 100 000 × 100 000 pixels: refused from its header, nothing decoded.
    let mut huge = png(&image::GrayImage::from_pixel(8, 8, image::Luma([0])));
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        scan(&huge, "image/png", &limits),
        Err(ScanError::TooManyPixels(limits.max_pixels))
    );
    // A truncated JPEG and a corrupt one.
    let good = jpeg(&photo(&sheet(&[dm(&tokens(1))], 4), 400, 300, 0.0, 1.0), 80);
    for bad in [good[..good.len() / 3].to_vec(), {
        let mut b = good.clone();
        for i in (200..b.len()).step_by(7) {
            b[i] ^= 0x5a;
        }
        b
    }] {
        let r = scan(&bad, "image/jpeg", &limits);
        assert!(r.as_ref().map_or(true, Vec::is_empty), "{r:?}");
    }
    // A PDF whose image stream (of a size the pixel limit allows) inflates to 128 MiB: refused
    // at the stream limit, never inflated in full.
    let bomb = {
        use lopdf::dictionary;
        let mut s = lopdf::Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Image", "Width" => 6000, "Height" => 6000,
                "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8,
            },
            vec![0u8; 128 << 20],
        );
        s.compress().unwrap();
        pdf(vec![s])
    };
    assert!(bomb.len() < limits.max_bytes, "{} bytes", bomb.len());
    assert_eq!(scan(&bomb, "application/pdf", &limits), Ok(vec![]));
    // Not a PDF at all, and a PDF cut in half.
    let half = {
        let f = pdf(vec![bitmap_xobject(&sheet(&[dm(&tokens(1))], 4))]);
        f[..f.len() / 2].to_vec()
    };
    for bad in [b"%PDF-1.4\n%%EOF".to_vec(), half] {
        let r = scan(&bad, "application/pdf", &limits);
        assert!(r.as_ref().map_or(true, Vec::is_empty), "{r:?}");
    }
    // Too large to read at all.
    let small = Limits {
        max_bytes: 1000,
        ..limits
    };
    assert_eq!(
        scan(&good, "image/jpeg", &small),
        Err(ScanError::TooLarge(1000))
    );
}

/// PNG's chunk checksum (CRC-32, ISO 3309), so the forged header is a well-formed one.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
