//! E-Rezept tokens read from the codes in a customer's photo or PDF: the DataMatrix codes of
//! a Tokenausdruck (gemSpec_DM_eRp: `{"urls": ["Task/…/$accept?ac=…"]}`, up to three tokens
//! each, and a collective code with all) and QR codes with the same payload.
//!
//! Everything here works on untrusted files within [`Limits`]: a file larger than
//! `max_bytes`, an image with more than `max_pixels`, or a PDF stream that would inflate past
//! `max_stream_bytes` is refused before it is decoded; a PDF gives at most `max_images` of its
//! images; a decoder that panics on a corrupt file is caught. A file with no code in it (most
//! photos) gives an empty list, never an error.
//!
//! May depend on: relay-core (its `erezept` rules), rxing, image, lopdf. Pure Rust.

use image::{GrayImage, ImageFormat, ImageReader};
use relay_core::erezept::{Prescription, from_code_payload};
use rxing::{BarcodeFormat, DecodeHints};
use std::collections::HashSet;
use std::io::Cursor;

/// Bounds on one file's decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file read at all.
    pub max_bytes: usize,
    /// The most pixels an image (or one image in a PDF) may have.
    pub max_pixels: u64,
    /// The most images read from one PDF.
    pub max_images: usize,
    /// The most bytes one PDF stream may decompress to.
    pub max_stream_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // WhatsApp's limits are 5 MB for images and 100 MB for documents; a Tokenausdruck
            // PDF is a few hundred kilobytes.
            max_bytes: 16 * 1024 * 1024,
            // 48 megapixels: the largest phone cameras.
            max_pixels: 48_000_000,
            max_images: 16,
            max_stream_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a file was not read. The messages name no content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("the file is larger than the {0} bytes read for codes")]
    TooLarge(usize),
    #[error("the image has more than {0} pixels")]
    TooManyPixels(u64),
    #[error("the file could not be read: {0}")]
    Unreadable(&'static str),
}

/// The kinds of file this reads: what WhatsApp delivers photos in, and PDF.
pub fn scannable(mime: &str) -> bool {
    let mime = mime.split(';').next().unwrap_or_default().trim();
    matches!(
        mime.to_ascii_lowercase().as_str(),
        "image/jpeg" | "image/png" | "image/webp" | "application/pdf"
    )
}

/// Every valid E-Rezept token in the codes of `bytes` (an image, or a PDF's embedded images),
/// each once, in the order found.
pub fn scan(bytes: &[u8], mime: &str, limits: &Limits) -> Result<Vec<Prescription>, ScanError> {
    if bytes.len() > limits.max_bytes {
        return Err(ScanError::TooLarge(limits.max_bytes));
    }
    let is_pdf = mime.to_ascii_lowercase().contains("pdf") || bytes.starts_with(b"%PDF");
    let images = if is_pdf {
        pdf_images(bytes, limits)?
    } else {
        vec![decode_image(bytes, None, limits)?]
    };
    let mut found = Vec::new();
    for image in images {
        for p in prescriptions_in(&image) {
            if !found.contains(&p) {
                found.push(p);
            }
        }
    }
    Ok(found)
}

/// Decodes a JPEG to its grey levels only (the luma channel, no colour conversion), refusing
/// more than `limits.max_pixels` from the header.
fn decode_jpeg(bytes: &[u8], limits: &Limits) -> Result<GrayImage, ScanError> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let side = usize::try_from(limits.max_pixels).unwrap_or(usize::MAX);
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::Luma)
        .set_max_width(side.min(65_535))
        .set_max_height(side.min(65_535));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    guarded(|| decoder.decode_headers())
        .ok_or(ScanError::Unreadable("the image decoder failed"))?
        .map_err(|_| ScanError::Unreadable("not an image"))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or(ScanError::Unreadable("not an image"))?;
    if (w as u64) * (h as u64) > limits.max_pixels {
        return Err(ScanError::TooManyPixels(limits.max_pixels));
    }
    let grey = guarded(|| decoder.decode())
        .ok_or(ScanError::Unreadable("the image decoder failed"))?
        .map_err(|_| ScanError::Unreadable("corrupt image"))?;
    if grey.len() != w * h {
        return Err(ScanError::Unreadable("corrupt image"));
    }
    GrayImage::from_raw(w as u32, h as u32, grey).ok_or(ScanError::Unreadable("corrupt image"))
}

/// Decodes an image file to grey levels, refusing more than `limits.max_pixels`.
fn decode_image(
    bytes: &[u8],
    format: Option<ImageFormat>,
    limits: &Limits,
) -> Result<GrayImage, ScanError> {
    if format == Some(ImageFormat::Jpeg) || bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, limits);
    }
    let reader = match format {
        Some(f) => ImageReader::with_format(Cursor::new(bytes), f),
        None => ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|_| ScanError::Unreadable("unknown image format"))?,
    };
    let mut reader = reader;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|_| ScanError::Unreadable("not an image"))?;
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ScanError::TooManyPixels(limits.max_pixels));
    }
    reader = match format {
        Some(f) => ImageReader::with_format(Cursor::new(bytes), f),
        None => ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|_| ScanError::Unreadable("unknown image format"))?,
    };
    let mut bounds = image::Limits::default();
    bounds.max_image_width = Some(w);
    bounds.max_image_height = Some(h);
    // The decoded image (up to four bytes a pixel) and the decoder's own buffers.
    bounds.max_alloc = Some(limits.max_pixels * 4 + 64 * 1024 * 1024);
    reader.limits(bounds);
    let image = guarded(|| reader.decode())
        .ok_or(ScanError::Unreadable("the image decoder failed"))?
        .map_err(|_| ScanError::Unreadable("corrupt image"))?;
    Ok(image.into_luma8())
}

/// Runs `f`, turning a panic (a decoder tripping over a hostile file) into `None`.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// The tokens in the DataMatrix and QR codes of one image. A photo over four megapixels is
/// read at half size (a printout's codes are large in a phone photo, and it is four times less
/// work), and its middle at full size only if that finds nothing.
fn prescriptions_in(image: &GrayImage) -> Vec<Prescription> {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return Vec::new();
    }
    if u64::from(w) * u64::from(h) > 4_000_000 {
        let found = read_all(halve(image));
        if !found.is_empty() {
            return found;
        }
        // Codes too small for half size: a printout photographed from afar, which the
        // customer aims at the middle of. The middle quarter at full size, not the whole.
        let middle = image::imageops::crop_imm(image, w / 4, h / 4, w / 2, h / 2).to_image();
        return read_all(middle);
    }
    read_all(image.clone())
}

/// Passes over the image that each paint the codes found so far white: the reader gives up
/// some codes of a tilted sheet with several, and finds them once the others are out of the
/// way. Ends when a pass finds nothing new (a photo without codes: after one pass). Then the
/// neighbourhood of every code found is searched (see [`NEIGHBOURS`]).
const MAX_PASSES: usize = 6;

/// The DataMatrix detector searches outwards from the middle of what it is given, so a code far
/// from the middle of a sheet with several may be missed by every whole-image pass. A
/// printout sets its codes in a row or a column: windows centred one and two code widths
/// away along each of a found code's sides give each neighbour a middle of its own. At most
/// this many windows per image.
const NEIGHBOURS: usize = 48;

fn read_all(mut image: GrayImage) -> Vec<Prescription> {
    let original = image.clone();
    let mut found: Vec<Prescription> = Vec::new();
    let mut payloads: Vec<String> = Vec::new();
    let mut corners: Vec<Vec<rxing::Point>> = Vec::new();
    let mut take = |r: &rxing::RXingResult,
                    found: &mut Vec<Prescription>,
                    corners: &mut Vec<Vec<rxing::Point>>| {
        if payloads.iter().any(|p| p == r.getText()) {
            return false;
        }
        payloads.push(r.getText().to_owned());
        corners.push(r.getPoints().to_vec());
        for p in from_code_payload(r.getText()) {
            if !found.contains(&p) {
                found.push(p);
            }
        }
        true
    };
    for _ in 0..MAX_PASSES {
        let results = codes_in(&image);
        let mut new = false;
        for r in &results {
            new |= take(r, &mut found, &mut corners);
        }
        if !new {
            break;
        }
        for r in &results {
            blank(&mut image, r.getPoints());
        }
    }
    let mut probed = 0;
    let mut next = 0;
    while next < corners.len() && probed < NEIGHBOURS {
        let windows = neighbour_windows(&corners[next], original.dimensions());
        next += 1;
        for (x, y, w, h) in windows {
            if probed >= NEIGHBOURS {
                break;
            }
            probed += 1;
            let window = image::imageops::crop_imm(&original, x, y, w, h).to_image();
            for r in codes_in(&window) {
                take(&r, &mut found, &mut corners);
            }
        }
    }
    found
}

/// Square windows (x, y, width, height) centred one and two code widths from the code with
/// `points` as corners, along each of its sides, inside an image of `size`.
fn neighbour_windows(points: &[rxing::Point], size: (u32, u32)) -> Vec<(u32, u32, u32, u32)> {
    if points.len() < 4 {
        return Vec::new();
    }
    let n = points.len() as f32;
    let (cx, cy) = (
        points.iter().map(|p| p.x).sum::<f32>() / n,
        points.iter().map(|p| p.y).sum::<f32>() / n,
    );
    let side = |a: &rxing::Point, b: &rxing::Point| (b.x - a.x, b.y - a.y);
    let (u, v) = (side(&points[0], &points[1]), side(&points[0], &points[3]));
    let len = |d: (f32, f32)| (d.0 * d.0 + d.1 * d.1).sqrt();
    let s = len(u).max(len(v));
    if !(s.is_finite() && s >= 4.0) {
        return Vec::new();
    }
    let (w, h) = (size.0 as f32, size.1 as f32);
    let span = 2.0 * s;
    let mut out = Vec::new();
    for k in [1.4f32, 2.8] {
        for d in [u, (-u.0, -u.1), v, (-v.0, -v.1)] {
            let l = len(d).max(1.0);
            let (mx, my) = (cx + d.0 / l * s * k, cy + d.1 / l * s * k);
            let x0 = (mx - span / 2.0).clamp(0.0, w);
            let y0 = (my - span / 2.0).clamp(0.0, h);
            let x1 = (mx + span / 2.0).clamp(0.0, w);
            let y1 = (my + span / 2.0).clamp(0.0, h);
            if x1 - x0 >= s && y1 - y0 >= s {
                out.push((x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32));
            }
        }
    }
    out
}

/// Paints the found code white: the quadrilateral of its corners (`points`), grown by a tenth
/// around its centre; a rotated code's bounding box would reach into its neighbours.
fn blank(image: &mut GrayImage, points: &[rxing::Point]) {
    if points.len() < 3 {
        return;
    }
    let n = points.len() as f32;
    let (cx, cy) = (
        points.iter().map(|p| p.x).sum::<f32>() / n,
        points.iter().map(|p| p.y).sum::<f32>() / n,
    );
    // The corners in angular order around the centre, pushed outwards.
    let mut corners: Vec<(f32, f32)> = points
        .iter()
        .map(|p| (cx + (p.x - cx) * 1.1, cy + (p.y - cy) * 1.1))
        .collect();
    corners.sort_by(|a, b| {
        let angle = |p: &(f32, f32)| (p.1 - cy).atan2(p.0 - cx);
        angle(a).total_cmp(&angle(b))
    });
    let inside = |x: f32, y: f32| {
        let mut sign = 0.0f32;
        for i in 0..corners.len() {
            let (a, b) = (corners[i], corners[(i + 1) % corners.len()]);
            let cross = (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0);
            if cross != 0.0 {
                if sign != 0.0 && cross.signum() != sign {
                    return false;
                }
                sign = cross.signum();
            }
        }
        true
    };
    let (w, h) = (image.width() as f32, image.height() as f32);
    let clamp = |v: f32, max: f32| v.clamp(0.0, max) as u32;
    let x0 = clamp(corners.iter().map(|c| c.0).fold(f32::MAX, f32::min), w);
    let x1 = clamp(
        corners.iter().map(|c| c.0).fold(f32::MIN, f32::max) + 1.0,
        w,
    );
    let y0 = clamp(corners.iter().map(|c| c.1).fold(f32::MAX, f32::min), h);
    let y1 = clamp(
        corners.iter().map(|c| c.1).fold(f32::MIN, f32::max) + 1.0,
        h,
    );
    for y in y0..y1 {
        for x in x0..x1 {
            if inside(x as f32 + 0.5, y as f32 + 0.5) {
                image.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
}

fn codes_in(image: &GrayImage) -> Vec<rxing::RXingResult> {
    let mut hints = DecodeHints {
        PossibleFormats: Some(HashSet::from([
            BarcodeFormat::DATA_MATRIX,
            BarcodeFormat::QR_CODE,
        ])),
        TryHarder: Some(true),
        ..DecodeHints::default()
    };
    let (w, h) = image.dimensions();
    guarded(|| {
        rxing::helpers::detect_multiple_in_luma_with_hints(image.as_raw().clone(), w, h, &mut hints)
    })
    .and_then(Result::ok)
    .unwrap_or_default()
}

/// The image at half its width and height, each pixel the mean of four.
fn halve(image: &GrayImage) -> GrayImage {
    let (w, h) = (image.width() / 2, image.height() / 2);
    let src = image.as_raw();
    let stride = image.width() as usize;
    let mut out = Vec::with_capacity(w as usize * h as usize);
    for y in 0..h as usize {
        let (r0, r1) = (2 * y * stride, (2 * y + 1) * stride);
        for x in 0..w as usize {
            let sum = u16::from(src[r0 + 2 * x])
                + u16::from(src[r0 + 2 * x + 1])
                + u16::from(src[r1 + 2 * x])
                + u16::from(src[r1 + 2 * x + 1]);
            out.push((sum / 4) as u8);
        }
    }
    GrayImage::from_raw(w, h, out).unwrap_or_default()
}

/// The images embedded in a PDF (image XObjects), as grey levels: JPEG streams (DCTDecode) as
/// they are, and Flate-compressed or plain samples in DeviceGray or DeviceRGB at 1 or 8 bits.
/// Other encodings (JPEG 2000, CCITT, JBIG2) are left out; so are codes drawn as vector
/// graphics, which a photo of the printout covers.
fn pdf_images(bytes: &[u8], limits: &Limits) -> Result<Vec<GrayImage>, ScanError> {
    let options = lopdf::LoadOptions {
        max_decompressed_size: Some(limits.max_stream_bytes),
        ..lopdf::LoadOptions::default()
    };
    let doc = guarded(|| lopdf::Document::load_mem_with_options(bytes, options))
        .ok_or(ScanError::Unreadable("the PDF parser failed"))?
        .map_err(|_| ScanError::Unreadable("corrupt PDF"))?;
    let mut images = Vec::new();
    for object in doc.objects.values() {
        if images.len() >= limits.max_images {
            break;
        }
        let Ok(stream) = object.as_stream() else {
            continue;
        };
        let dict = &stream.dict;
        let is_image = dict
            .get(b"Subtype")
            .and_then(|o| o.as_name())
            .is_ok_and(|n| n == b"Image");
        if !is_image {
            continue;
        }
        if let Some(image) = guarded(|| pdf_image(stream, limits)).flatten() {
            images.push(image);
        }
    }
    Ok(images)
}

fn pdf_image(stream: &lopdf::Stream, limits: &Limits) -> Option<GrayImage> {
    let dict = &stream.dict;
    let int = |key: &[u8]| dict.get(key).ok()?.as_i64().ok();
    let filters: Vec<Vec<u8>> = match dict.get(b"Filter") {
        Ok(lopdf::Object::Name(n)) => vec![n.clone()],
        Ok(lopdf::Object::Array(a)) => a
            .iter()
            .filter_map(|o| o.as_name().ok().map(<[u8]>::to_vec))
            .collect(),
        _ => Vec::new(),
    };
    if filters.last().is_some_and(|f| f == b"DCTDecode") {
        if filters.len() != 1 {
            return None;
        }
        return decode_image(&stream.content, Some(ImageFormat::Jpeg), limits).ok();
    }
    if filters.iter().any(|f| f != b"FlateDecode") {
        return None;
    }
    let (w, h) = (
        u32::try_from(int(b"Width")?).ok()?,
        u32::try_from(int(b"Height")?).ok()?,
    );
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > limits.max_pixels {
        return None;
    }
    let bits = int(b"BitsPerComponent").unwrap_or(8);
    let mask = dict
        .get(b"ImageMask")
        .and_then(|o| o.as_bool())
        .unwrap_or(false);
    let components = if mask {
        1
    } else {
        match dict.get(b"ColorSpace").and_then(|o| o.as_name()) {
            Ok(b"DeviceGray") => 1,
            Ok(b"DeviceRGB") => 3,
            _ => return None,
        }
    };
    let samples = if filters.is_empty() {
        stream.content.clone()
    } else {
        stream
            .decompressed_content_with_limit(limits.max_stream_bytes)
            .ok()?
    };
    let (w, h) = (w as usize, h as usize);
    let mut grey = Vec::with_capacity(w * h);
    match (bits, components) {
        (8, 1) => grey.extend(samples.get(..w * h)?),
        (8, 3) => {
            let rgb = samples.get(..w * h * 3)?;
            grey.extend(rgb.chunks_exact(3).map(|p| {
                ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000)
                    as u8
            }));
        }
        (1, 1) => {
            // Rows padded to whole bytes; 1 is white in DeviceGray, paint in an image mask.
            let row = w.div_ceil(8);
            let bits = samples.get(..row * h)?;
            for y in 0..h {
                for x in 0..w {
                    let set = bits[y * row + x / 8] & (0x80 >> (x % 8)) != 0;
                    grey.push(if set != mask { 255 } else { 0 });
                }
            }
        }
        _ => return None,
    }
    GrayImage::from_raw(w as u32, h as u32, grey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_photos_and_pdfs_are_read() {
        assert!(scannable("image/jpeg"));
        assert!(scannable("application/pdf"));
        assert!(scannable("IMAGE/PNG; charset=binary"));
        assert!(!scannable("audio/ogg"));
        assert!(!scannable("video/mp4"));
        assert!(!scannable("image/gif"));
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let limits = Limits::default();
        assert!(matches!(
            scan(b"not an image", "image/jpeg", &limits),
            Err(ScanError::Unreadable(_))
        ));
        let pdf = scan(b"%PDF-1.7\n garbage", "application/pdf", &limits);
        assert!(pdf.as_ref().map_or(true, Vec::is_empty), "{pdf:?}");
        let small = Limits {
            max_bytes: 4,
            ..limits
        };
        assert_eq!(
            scan(b"12345", "image/png", &small),
            Err(ScanError::TooLarge(4))
        );
    }
}
