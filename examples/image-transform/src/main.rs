//! Image transform, the CGN paper's MediaGen service, as a WASI command.
//!
//! Reads an image on stdin, applies the operations given as arguments in
//! order, and writes the result on stdout:
//!
//! ```text
//! image-transform [OP]... [--format png|jpeg|gif|bmp|tiff|webp] < in > out
//!   resize WxH        fit inside W×H, keeping the aspect ratio
//!   resize-exact WxH  stretch to exactly W×H
//!   thumbnail N       fit inside N×N (fast)
//!   rotate 90|180|270
//!   flip h|v
//!   grayscale
//!   blur SIGMA
//!   invert
//! ```
//!
//! The output format defaults to the input's. A summary of what was done goes
//! to stderr. Exit code 2 means bad arguments, 1 a bad image.

use std::io::{Cursor, Read, Write};
use std::process::ExitCode;

use image::{DynamicImage, ImageFormat, imageops::FilterType};

enum Op {
    Resize(u32, u32),
    ResizeExact(u32, u32),
    Thumbnail(u32),
    Rotate(u32),
    Flip(bool),
    Grayscale,
    Blur(f32),
    Invert,
}

fn parse_dims(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WxH, got {s:?}"))?;
    let w: u32 = w.parse().map_err(|_| format!("bad width in {s:?}"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad height in {s:?}"))?;
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(format!("dimensions must be 1..=16384, got {s:?}"));
    }
    Ok((w, h))
}

fn parse_format(s: &str) -> Result<ImageFormat, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "png" => ImageFormat::Png,
        "jpeg" | "jpg" => ImageFormat::Jpeg,
        "gif" => ImageFormat::Gif,
        "bmp" => ImageFormat::Bmp,
        "tiff" | "tif" => ImageFormat::Tiff,
        "webp" => ImageFormat::WebP,
        other => return Err(format!("unknown format {other:?}")),
    })
}

fn parse_args(args: &[String]) -> Result<(Vec<Op>, Option<ImageFormat>), String> {
    let mut ops = Vec::new();
    let mut format = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "resize" => {
                let (w, h) = parse_dims(&value("resize")?)?;
                ops.push(Op::Resize(w, h));
            }
            "resize-exact" => {
                let (w, h) = parse_dims(&value("resize-exact")?)?;
                ops.push(Op::ResizeExact(w, h));
            }
            "thumbnail" => {
                let n = value("thumbnail")?;
                let n: u32 = n.parse().map_err(|_| format!("bad size {n:?}"))?;
                ops.push(Op::Thumbnail(n.clamp(1, 16384)));
            }
            "rotate" => match value("rotate")?.as_str() {
                "90" => ops.push(Op::Rotate(90)),
                "180" => ops.push(Op::Rotate(180)),
                "270" => ops.push(Op::Rotate(270)),
                other => return Err(format!("rotate takes 90, 180 or 270, got {other:?}")),
            },
            "flip" => match value("flip")?.as_str() {
                "h" => ops.push(Op::Flip(true)),
                "v" => ops.push(Op::Flip(false)),
                other => return Err(format!("flip takes h or v, got {other:?}")),
            },
            "grayscale" | "greyscale" => ops.push(Op::Grayscale),
            "invert" => ops.push(Op::Invert),
            "blur" => {
                let s = value("blur")?;
                let sigma: f32 = s.parse().map_err(|_| format!("bad sigma {s:?}"))?;
                ops.push(Op::Blur(sigma.clamp(0.0, 100.0)));
            }
            "--format" | "-f" => format = Some(parse_format(&value("--format")?)?),
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok((ops, format))
}

fn apply(img: DynamicImage, op: &Op) -> DynamicImage {
    match *op {
        Op::Resize(w, h) => img.resize(w, h, FilterType::Lanczos3),
        Op::ResizeExact(w, h) => img.resize_exact(w, h, FilterType::Lanczos3),
        Op::Thumbnail(n) => img.thumbnail(n, n),
        Op::Rotate(90) => img.rotate90(),
        Op::Rotate(180) => img.rotate180(),
        Op::Rotate(_) => img.rotate270(),
        Op::Flip(true) => img.fliph(),
        Op::Flip(false) => img.flipv(),
        Op::Grayscale => img.grayscale(),
        Op::Blur(sigma) => img.blur(sigma),
        Op::Invert => {
            let mut img = img;
            img.invert();
            img
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ops, format) = match parse_args(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("image-transform: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("image-transform: read stdin: {e}");
        return ExitCode::from(1);
    }
    let in_format = match image::guess_format(&input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("image-transform: unrecognized image on stdin: {e}");
            return ExitCode::from(1);
        }
    };
    let mut img = match image::load_from_memory_with_format(&input, in_format) {
        Ok(img) => img,
        Err(e) => {
            eprintln!("image-transform: decode: {e}");
            return ExitCode::from(1);
        }
    };
    let (w0, h0) = (img.width(), img.height());
    for op in &ops {
        img = apply(img, op);
    }
    let out_format = format.unwrap_or(in_format);
    // JPEG has no alpha channel.
    if out_format == ImageFormat::Jpeg && img.color().has_alpha() {
        img = DynamicImage::ImageRgb8(img.to_rgb8());
    }
    let mut out = Cursor::new(Vec::new());
    if let Err(e) = img.write_to(&mut out, out_format) {
        eprintln!("image-transform: encode {out_format:?}: {e}");
        return ExitCode::from(1);
    }
    let out = out.into_inner();
    eprintln!(
        "image-transform: {in_format:?} {w0}x{h0} -> {out_format:?} {}x{} ({} ops, {} bytes)",
        img.width(),
        img.height(),
        ops.len(),
        out.len()
    );
    if let Err(e) = std::io::stdout().write_all(&out) {
        eprintln!("image-transform: write stdout: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
