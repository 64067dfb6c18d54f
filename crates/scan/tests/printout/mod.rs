//! Generated Tokenausdrucke: real DataMatrix (and QR) codes of E-Rezept payloads, drawn on a
//! sheet of paper in a photo — scaled, rotated, on a noisy background, JPEG-compressed as a
//! phone sends it — and PDFs that embed such images. Shared by the tests and the bench.
#![allow(dead_code, clippy::unwrap_used)]

use image::{GrayImage, Luma, RgbImage};
use relay_core::erezept::Prescription;
use rxing::{BarcodeFormat, Writer};

/// Tokens with valid prescription ids (check digits by ISO 7064 MOD 97-10) and access codes.
pub fn tokens(n: usize) -> Vec<Prescription> {
    let ids = [
        "160.123.456.789.123.58",
        "160.000.000.000.001.54",
        "209.123.456.789.012.25",
    ];
    let codes = [
        "777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
    ];
    (0..n)
        .map(|i| Prescription {
            task_id: ids[i].into(),
            access_code: codes[i].into(),
        })
        .collect()
}

/// The payload of a printout's code (gemSpec_DM_eRp): `{"urls": [...]}`.
pub fn payload(tokens: &[Prescription]) -> String {
    let urls: Vec<String> = tokens
        .iter()
        .map(|t| format!("\"{}\"", t.token()))
        .collect();
    format!("{{\"urls\":[{}]}}", urls.join(","))
}

/// A code's modules (true is dark).
pub fn code(payload: &str, format: BarcodeFormat) -> rxing::common::BitMatrix {
    match format {
        BarcodeFormat::QR_CODE => rxing::qrcode::QRCodeWriter
            .encode(payload, &format, 0, 0)
            .unwrap(),
        _ => rxing::datamatrix::DataMatrixWriter
            .encode(payload, &format, 0, 0)
            .unwrap(),
    }
}

/// A sheet: white paper with the codes at `module` pixels per module, side by side.
pub fn sheet(codes: &[rxing::common::BitMatrix], module: u32) -> GrayImage {
    let margin = module * 8;
    let width: u32 = codes
        .iter()
        .map(|c| c.width() * module + margin)
        .sum::<u32>()
        + margin;
    let height = codes.iter().map(|c| c.height()).max().unwrap_or(0) * module + 2 * margin;
    let mut img = GrayImage::from_pixel(width, height, Luma([245]));
    let mut left = margin;
    for c in codes {
        for y in 0..c.height() * module {
            for x in 0..c.width() * module {
                if c.get(x / module, y / module) {
                    img.put_pixel(left + x, margin + y, Luma([25]));
                }
            }
        }
        left += c.width() * module + margin;
    }
    img
}

/// A tiny deterministic noise source (xorshift), so every run draws the same photo.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
}

/// A `width`×`height` photo: a noisy, uneven background (a table top), the sheet rotated by
/// `degrees` and scaled by `scale` in the middle, a little sensor noise over all of it.
pub fn photo(sheet: &GrayImage, width: u32, height: u32, degrees: f64, scale: f64) -> RgbImage {
    let mut noise = Noise::new(u64::from(width) * 31 + u64::from(height));
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
    let (sw, sh) = (f64::from(sheet.width()), f64::from(sheet.height()));
    RgbImage::from_fn(width, height, |x, y| {
        // Where this pixel falls on the sheet (the inverse of rotate-then-scale).
        let (dx, dy) = ((f64::from(x) - cx) / scale, (f64::from(y) - cy) / scale);
        let (sx, sy) = (
            dx * cos + dy * sin + sw / 2.0,
            -dx * sin + dy * cos + sh / 2.0,
        );
        let grain = i16::from(noise.byte() % 24) - 12;
        let base: i16 = if sx >= 0.0 && sy >= 0.0 && sx < sw - 1.0 && sy < sh - 1.0 {
            i16::from(bilinear(sheet, sx, sy))
        } else {
            // Wood-like stripes and blotches.
            let stripe = ((f64::from(x) * 0.05 + f64::from(y) * 0.013).sin() * 30.0) as i16;
            110 + stripe + i16::from(noise.byte() % 40)
        };
        let v = (base + grain).clamp(0, 255) as u8;
        image::Rgb([v, v.saturating_sub(6), v.saturating_sub(14)])
    })
}

fn bilinear(img: &GrayImage, x: f64, y: f64) -> u8 {
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (fx, fy) = (x - x.floor(), y - y.floor());
    let p = |dx: u32, dy: u32| f64::from(img.get_pixel(x0 + dx, y0 + dy).0[0]);
    let top = p(0, 0) * (1.0 - fx) + p(1, 0) * fx;
    let bottom = p(0, 1) * (1.0 - fx) + p(1, 1) * fx;
    (top * (1.0 - fy) + bottom * fy).round() as u8
}

/// The photo as a phone sends it: JPEG at `quality`.
pub fn jpeg(photo: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(photo)
        .unwrap();
    out
}

pub fn png(img: &GrayImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A one-page PDF showing `images` (each an image XObject), as a scanner or a practice's
/// software writes them.
pub fn pdf(images: Vec<lopdf::Stream>) -> Vec<u8> {
    use lopdf::{Document, Object, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let mut xobjects = lopdf::Dictionary::new();
    let mut content = String::new();
    for (i, image) in images.into_iter().enumerate() {
        let id = doc.add_object(image);
        let name = format!("Im{i}");
        xobjects.set(name.clone(), Object::Reference(id));
        content.push_str(&format!(
            "q 200 0 0 200 {} 400 cm /{name} Do Q\n",
            50 + 210 * i
        ));
    }
    let content_id = doc.add_object(lopdf::Stream::new(dictionary! {}, content.into_bytes()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        "Resources" => dictionary! { "XObject" => xobjects },
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// An image XObject holding a JPEG (DCTDecode).
pub fn jpeg_xobject(photo: &RgbImage, quality: u8) -> lopdf::Stream {
    use lopdf::dictionary;
    lopdf::Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Image",
            "Width" => photo.width() as i64, "Height" => photo.height() as i64,
            "ColorSpace" => "DeviceRGB", "BitsPerComponent" => 8, "Filter" => "DCTDecode",
        },
        jpeg(photo, quality),
    )
}

/// An image XObject of one bit per pixel (1 is white), Flate-compressed: how the codes of a
/// generated Tokenausdruck are often embedded.
pub fn bitmap_xobject(sheet: &GrayImage) -> lopdf::Stream {
    use lopdf::dictionary;
    let (w, h) = sheet.dimensions();
    let row = w.div_ceil(8) as usize;
    let mut bits = vec![0u8; row * h as usize];
    for (x, y, p) in sheet.enumerate_pixels() {
        if p.0[0] > 128 {
            bits[y as usize * row + x as usize / 8] |= 0x80 >> (x % 8);
        }
    }
    let mut s = lopdf::Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Image",
            "Width" => w as i64, "Height" => h as i64,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 1,
        },
        bits,
    );
    s.compress().unwrap();
    s
}
