//! Thumbnails as Synapse makes them: which size answers a request (`choose`), and the image work
//! (`render`) — header read first, so that an image with more than `max_image_pixels` pixels is
//! refused before a single pixel is decoded. Blocking code: callers run it off the async runtime.
//!
//! `choose` is Synapse's `_select_thumbnail` over the sizes `thumbnail_sizes` would produce for
//! this image (crop exact; scale keeps the aspect ratio and never enlarges), or the requested size
//! with `dynamic_thumbnails`. Only the PNG, JPEG, GIF and WebP decoders of the `image` crate are
//! used, and `image::Limits` caps allocations too. Then EXIF rotation, resizing (area averaging to
//! shrink) and encoding: JPEG quality 80 for JPEG and WebP, PNG for PNG and GIF, as Synapse.

use std::{fs::File, io::BufReader, path::Path};

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, codecs::jpeg::JpegEncoder,
    codecs::png::PngEncoder, imageops::FilterType, metadata::Orientation,
};

use crate::config::media::{ThumbnailMethod, ThumbnailSize};

/// Synapse's JPEG quality for thumbnails.
const JPEG_QUALITY: u8 = 80;

/// The image types thumbnails are made of, with the type of their thumbnails (Synapse's map:
/// PNG for inputs that may be transparent, JPEG otherwise).
pub fn formats(content_type: &str) -> Option<(ImageFormat, OutputType)> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "image/jpeg" | "image/jpg" => (ImageFormat::Jpeg, OutputType::Jpeg),
        "image/webp" => (ImageFormat::WebP, OutputType::Jpeg),
        "image/png" => (ImageFormat::Png, OutputType::Png),
        "image/gif" => (ImageFormat::Gif, OutputType::Png),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    Jpeg,
    Png,
}

impl OutputType {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
        }
    }
}

/// A thumbnail to make: its exact output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

impl Target {
    /// The file name of the cached thumbnail.
    pub fn file_name(&self, output: OutputType) -> String {
        format!(
            "{}x{}-{}.{}",
            self.width,
            self.height,
            self.method.as_str(),
            output.extension()
        )
    }

    /// Synapse's sizes: `crop` is exact; `scale` keeps the aspect ratio inside the box and never
    /// enlarges.
    fn for_source(size: ThumbnailSize, source: (u32, u32)) -> Self {
        let (width, height) = match size.method {
            ThumbnailMethod::Crop => (size.width, size.height),
            ThumbnailMethod::Scale => {
                let (w, h) = aspect(source, size.width, size.height);
                (w.min(source.0), h.min(source.1))
            }
        };
        Self {
            width,
            height,
            method: size.method,
        }
    }
}

/// Synapse's `Thumbnailer.aspect`: the largest size with the source's aspect ratio that fits.
fn aspect((width, height): (u32, u32), max_width: u32, max_height: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let (mw, mh) = (u64::from(max_width), u64::from(max_height));
    if mw * h < mh * w {
        (max_width, ((mw * h) / w).max(1) as u32)
    } else {
        (((mh * w) / h).max(1) as u32, max_height)
    }
}

/// The thumbnail that answers a request for `desired` with `method`: the request itself with
/// `dynamic_thumbnails`, otherwise the configured size Synapse's `_select_thumbnail` picks.
pub fn choose(
    sizes: &[ThumbnailSize],
    dynamic: bool,
    source: (u32, u32),
    desired: (u32, u32),
    method: ThumbnailMethod,
) -> Option<Target> {
    if dynamic {
        let size = ThumbnailSize {
            width: desired.0,
            height: desired.1,
            method,
        };
        return Some(Target::for_source(size, source));
    }
    let candidates = sizes.iter().map(|s| Target::for_source(*s, source));
    let (dw, dh) = (i64::from(desired.0), i64::from(desired.1));
    let size_quality = |t: &Target| ((dw - i64::from(t.width)) * (dh - i64::from(t.height))).abs();
    let big_enough = |t: &Target| i64::from(t.width) >= dw || i64::from(t.height) >= dh;
    match method {
        ThumbnailMethod::Crop => {
            let crops: Vec<Target> = candidates
                .filter(|t| t.method == ThumbnailMethod::Crop)
                .collect();
            let key = |t: &Target| {
                let aspect_quality = (dw * i64::from(t.height) - dh * i64::from(t.width)).abs();
                let min_quality =
                    i64::from(!(dw <= i64::from(t.width) && dh <= i64::from(t.height)));
                (aspect_quality, min_quality, size_quality(t))
            };
            let best = |pool: Vec<&Target>| pool.into_iter().min_by_key(|t| key(t)).copied();
            best(crops.iter().filter(|t| big_enough(t)).collect())
                .or_else(|| best(crops.iter().collect()))
        }
        ThumbnailMethod::Scale => {
            let scales: Vec<Target> = candidates
                .filter(|t| t.method == ThumbnailMethod::Scale)
                .collect();
            let best =
                |pool: Vec<&Target>| pool.into_iter().min_by_key(|t| size_quality(t)).copied();
            best(scales.iter().filter(|t| big_enough(t)).collect())
                .or_else(|| best(scales.iter().collect()))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("the image has {pixels} pixels, more than max_image_pixels ({limit})")]
    TooManyPixels { pixels: u64, limit: u64 },
    #[error("the image cannot be read: {0}")]
    Unreadable(String),
    /// The thumbnail was made but cannot be kept (a full disk, say).
    #[error("cannot store the thumbnail: {0}")]
    Store(std::io::Error),
}

impl From<image::ImageError> for ThumbnailError {
    fn from(e: image::ImageError) -> Self {
        Self::Unreadable(e.to_string())
    }
}

impl From<std::io::Error> for ThumbnailError {
    fn from(e: std::io::Error) -> Self {
        Self::Unreadable(e.to_string())
    }
}

/// An image opened far enough to know its size (as displayed, after EXIF rotation).
pub struct Source {
    decoder: Box<dyn ImageDecoder>,
    orientation: Orientation,
    pub dimensions: (u32, u32),
}

/// Reads the header of the image at `path`; refuses images of more than `max_pixels` pixels
/// before decoding anything.
pub fn open(path: &Path, format: ImageFormat, max_pixels: u64) -> Result<Source, ThumbnailError> {
    let mut reader = ImageReader::with_format(BufReader::new(File::open(path)?), format);
    let mut limits = Limits::default();
    // Defence in depth: even a decoder that misreports its size cannot allocate more than the
    // largest image allowed (at 8 bytes a pixel: 16-bit RGBA).
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ThumbnailError::TooManyPixels {
            pixels,
            limit: max_pixels,
        });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let dimensions = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    Ok(Source {
        decoder: Box::new(decoder),
        orientation,
        dimensions,
    })
}

/// Decodes the image (the first frame of an animation) and makes the thumbnail, encoded.
pub fn render(
    source: Source,
    target: Target,
    output: OutputType,
) -> Result<Vec<u8>, ThumbnailError> {
    let started = std::time::Instant::now();
    let mut image = DynamicImage::from_decoder(source.decoder)?;
    image.apply_orientation(source.orientation);
    let decoded = started.elapsed();
    let thumbnail = match target.method {
        ThumbnailMethod::Scale => resize(&image, target.width, target.height),
        ThumbnailMethod::Crop => crop(&image, target.width, target.height),
    };
    drop(image);
    let resized = started.elapsed();
    let encoded = encode(&thumbnail, output)?;
    tracing::debug!(
        width = target.width,
        height = target.height,
        decode_ms = decoded.as_millis() as u64,
        resize_ms = (resized - decoded).as_millis() as u64,
        encode_ms = (started.elapsed() - resized).as_millis() as u64,
        "made a thumbnail"
    );
    Ok(encoded)
}

/// Synapse's crop: scale so the box is covered, then cut the middle out.
fn crop(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    let (w, h) = (
        u64::from(image.width().max(1)),
        u64::from(image.height().max(1)),
    );
    let (tw, th) = (u64::from(width), u64::from(height));
    if tw * h > th * w {
        let scaled_height = ((tw * h) / w).max(th) as u32;
        let scaled = resize(image, width, scaled_height);
        scaled.crop_imm(0, (scaled_height - height) / 2, width, height)
    } else {
        let scaled_width = ((th * w) / h).max(tw) as u32;
        let scaled = resize(image, scaled_width, height);
        scaled.crop_imm((scaled_width - width) / 2, 0, width, height)
    }
}

/// Exactly `width`×`height`: area averaging to shrink (fast, and what a thumbnail wants),
/// a triangle filter to enlarge.
fn resize(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    if width <= image.width() && height <= image.height() {
        image.thumbnail_exact(width, height)
    } else {
        image.resize_exact(width, height, FilterType::Triangle)
    }
}

fn encode(image: &DynamicImage, output: OutputType) -> Result<Vec<u8>, ThumbnailError> {
    let mut bytes = Vec::new();
    match output {
        OutputType::Jpeg => {
            // JPEG has no alpha channel.
            DynamicImage::ImageRgb8(image.to_rgb8())
                .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY))?
        }
        OutputType::Png => image.write_with_encoder(PngEncoder::new(&mut bytes))?,
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::media::default_thumbnail_sizes;

    fn pick(source: (u32, u32), desired: (u32, u32), method: ThumbnailMethod) -> (u32, u32) {
        let target = choose(&default_thumbnail_sizes(), false, source, desired, method).unwrap();
        assert_eq!(target.method, method);
        (target.width, target.height)
    }

    #[test]
    fn requests_get_the_size_synapse_would_serve() {
        use ThumbnailMethod::{Crop, Scale};
        // Element asks for avatars at 32/48/96 cropped and for timeline images at 800x600 scaled.
        assert_eq!(pick((1000, 500), (96, 96), Crop), (96, 96));
        assert_eq!(pick((1000, 500), (48, 48), Crop), (96, 96));
        assert_eq!(pick((1000, 500), (24, 24), Crop), (32, 32));
        assert_eq!(pick((1000, 500), (320, 240), Scale), (320, 160));
        assert_eq!(pick((1000, 500), (800, 600), Scale), (800, 400));
        assert_eq!(pick((1000, 500), (2000, 2000), Scale), (800, 400));
        assert_eq!(pick((1000, 500), (100, 100), Scale), (320, 160));
        // Never larger than the original when scaling.
        assert_eq!(pick((100, 50), (320, 240), Scale), (100, 50));
    }

    #[test]
    fn dynamic_thumbnails_are_made_to_measure() {
        let target = choose(&[], true, (1000, 500), (200, 200), ThumbnailMethod::Scale).unwrap();
        assert_eq!((target.width, target.height), (200, 100));
        let target = choose(&[], true, (1000, 500), (50, 70), ThumbnailMethod::Crop).unwrap();
        assert_eq!((target.width, target.height), (50, 70));
    }

    #[test]
    fn crop_fills_the_box() {
        let image = DynamicImage::new_rgb8(300, 100);
        let cropped = crop(&image, 50, 50);
        assert_eq!((cropped.width(), cropped.height()), (50, 50));
        let cropped = crop(&image, 600, 100);
        assert_eq!((cropped.width(), cropped.height()), (600, 100));
    }
}
