//! Ground truth for the localisation metrics: the boxes of each image, read from
//! the formats datasets ship in, and the map from a dataset's labels to a model's
//! classes.
//!
//! - **Pascal VOC** XML (one file per image): `<filename>`, `<size>`, and an
//!   `<object>` per box with `<name>`, `<difficult>` and `<bndbox>`. VOC's corners
//!   are 1-based pixel indices: `xmin = 1` is the first column.
//! - **ILSVRC** validation XML: the same schema, with WordNet synset ids
//!   (`n01440764`) as names. Its corners are 0-based (its files hold `xmin = 0`).
//! - **COCO** JSON: `images` (`id`, `file_name`, `width`, `height`), `categories`
//!   (`id`, `name`) and `annotations` (`image_id`, `category_id`, `bbox` as
//!   `[x, y, width, height]` in continuous coordinates, `iscrowd`). A box covers
//!   the pixels it touches.
//!
//! Boxes are clipped to the image, as the ILSVRC evaluation does; a box wholly
//! outside it, or corners the wrong way round, is an error naming the file.
//!
//! Labels are strings; a [`ClassMap`] says which model classes each one means. The
//! ILSVRC synsets map to torchvision's class order ([`ClassMap::imagenet_synsets`],
//! shipped here); other datasets bring a JSON object from label to class indices,
//! where one label may mean several classes (VOC's `cat` is five ImageNet cats).

use std::collections::BTreeMap;
use std::path::Path;

use attrib_core::{Error, Result};

use crate::PixelBox;

/// The largest annotation file read (COCO's instances_val2017.json is 25 MB).
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// One ground-truth box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The dataset's label (a VOC class name, a synset id, a COCO category name).
    pub label: String,
    /// The box, in the image's pixels.
    pub bbox: PixelBox,
    /// VOC's `difficult` flag or COCO's `iscrowd`; kept for the record, the box
    /// still counts.
    pub difficult: bool,
}

/// One image's annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotatedImage {
    /// The image file, relative to the data folder.
    pub file: String,
    /// Width in pixels, as annotated.
    pub width: usize,
    /// Height in pixels, as annotated.
    pub height: usize,
    /// Its boxes.
    pub objects: Vec<Object>,
}

impl AnnotatedImage {
    /// The distinct labels, sorted.
    pub fn labels(&self) -> Vec<&str> {
        let mut l: Vec<&str> = self.objects.iter().map(|o| o.label.as_str()).collect();
        l.sort_unstable();
        l.dedup();
        l
    }

    /// The boxes of `label`.
    pub fn boxes(&self, label: &str) -> Vec<PixelBox> {
        self.objects
            .iter()
            .filter(|o| o.label == label)
            .map(|o| o.bbox)
            .collect()
    }
}

/// The annotation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pascal VOC XML, 1-based corners.
    Voc,
    /// ILSVRC XML, 0-based corners.
    Ilsvrc,
    /// COCO JSON.
    Coco,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "voc" => Ok(Format::Voc),
            "ilsvrc" => Ok(Format::Ilsvrc),
            "coco" => Ok(Format::Coco),
            _ => Err(Error::param(
                "annotation format",
                format!("unknown `{s}`; valid: voc, ilsvrc, coco"),
            )),
        }
    }
}

fn io(path: &Path, reason: impl ToString) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_text(path: &Path) -> Result<String> {
    let len = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(io(
            path,
            format!("{len} bytes, more than an annotation file may hold ({MAX_FILE_BYTES})"),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

/// Reads `path`: a COCO `.json`, one VOC/ILSVRC `.xml`, or a folder of them (its
/// `.xml` files, sorted by name). `format` `None` detects it: JSON is COCO; XML
/// whose labels are all synset ids is ILSVRC, otherwise VOC. Images come back in
/// file-name order, whatever order the files list them in.
pub fn read(path: &Path, format: Option<Format>) -> Result<Vec<AnnotatedImage>> {
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    let mut images = if meta.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| io(path, e))?
            .map(|e| e.map(|e| e.path()).map_err(|e| io(path, e)))
            .collect::<Result<Vec<_>>>()?;
        files.retain(|p| p.extension().is_some_and(|e| e == "xml"));
        files.sort();
        if files.is_empty() {
            return Err(io(path, "holds no .xml annotation"));
        }
        let mut raw = Vec::with_capacity(files.len());
        for f in &files {
            raw.push((f.clone(), read_text(f)?));
        }
        xml_set(&raw, format)?
    } else if path.extension().is_some_and(|e| e == "json") || format == Some(Format::Coco) {
        if format.is_some_and(|f| f != Format::Coco) {
            return Err(io(path, "a JSON file is COCO; --format says otherwise"));
        }
        parse_coco(&read_text(path)?).map_err(|e| io(path, e))?
    } else {
        xml_set(&[(path.to_path_buf(), read_text(path)?)], format)?
    };
    images.sort_by(|a, b| a.file.cmp(&b.file));
    if let Some(w) = images.windows(2).find(|w| w[0].file == w[1].file) {
        return Err(io(path, format!("two annotations for `{}`", w[0].file)));
    }
    Ok(images)
}

fn xml_set(
    files: &[(std::path::PathBuf, String)],
    format: Option<Format>,
) -> Result<Vec<AnnotatedImage>> {
    let format = match format {
        Some(Format::Coco) => {
            return Err(Error::param(
                "annotation format",
                "COCO annotations are one JSON file, not XML",
            ))
        }
        Some(f) => f,
        None => {
            // Parse as VOC first only to look at the labels.
            let mut all_synsets = true;
            for (p, text) in files {
                let img = parse_voc(text, Format::Ilsvrc).map_err(|e| io(p, e))?;
                all_synsets &= img.objects.iter().all(|o| is_synset(&o.label));
            }
            if all_synsets {
                Format::Ilsvrc
            } else {
                Format::Voc
            }
        }
    };
    files
        .iter()
        .map(|(p, text)| parse_voc(text, format).map_err(|e| io(p, e)))
        .collect()
}

/// Whether `s` is a WordNet noun synset id, `n` and eight digits.
pub fn is_synset(s: &str) -> bool {
    s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A box from corners in the image's pixel indices (already 0-based), clipped to
/// `width x height`.
fn clipped(
    corners: [f64; 4],
    width: usize,
    height: usize,
) -> std::result::Result<PixelBox, String> {
    let [x0, y0, x1, y1] = corners;
    if corners.iter().any(|v| !v.is_finite()) {
        return Err(format!("box {corners:?} is not finite"));
    }
    if x1 < x0 || y1 < y0 {
        return Err(format!(
            "box {corners:?} has its corners the wrong way round"
        ));
    }
    let (w, h) = (width as f64, height as f64);
    if x1 < 0.0 || y1 < 0.0 || x0 > w - 1.0 || y0 > h - 1.0 {
        return Err(format!(
            "box {corners:?} lies outside the {width}x{height} image"
        ));
    }
    let cx = |v: f64| v.clamp(0.0, w - 1.0) as usize;
    let cy = |v: f64| v.clamp(0.0, h - 1.0) as usize;
    Ok(PixelBox {
        x0: cx(x0),
        y0: cy(y0),
        x1: cx(x1),
        y1: cy(y1),
    })
}

fn positive(v: f64, what: &str) -> std::result::Result<usize, String> {
    if (1.0..=1e6).contains(&v) && v.fract() == 0.0 {
        Ok(v as usize)
    } else {
        Err(format!(
            "{what} {v} is not a whole number of pixels in 1..=1000000"
        ))
    }
}

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn child<'a, 'i>(n: Node<'a, 'i>, tag: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == tag)
}

fn text_of(n: Node<'_, '_>, tag: &str, at: &str) -> std::result::Result<String, String> {
    child(n, tag)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .ok_or_else(|| format!("{at} has no <{tag}>"))
}

fn number(n: Node<'_, '_>, tag: &str, at: &str) -> std::result::Result<f64, String> {
    let t = text_of(n, tag, at)?;
    t.parse::<f64>()
        .map_err(|_| format!("{at}'s <{tag}> `{t}` is not a number"))
}

/// Parses one VOC (1-based corners) or ILSVRC (0-based) XML annotation.
pub fn parse_voc(text: &str, format: Format) -> std::result::Result<AnnotatedImage, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "annotation" {
        return Err(format!(
            "the root element is <{}>, not <annotation>",
            root.tag_name().name()
        ));
    }
    let mut file = text_of(root, "filename", "<annotation>")?;
    let size = child(root, "size").ok_or("<annotation> has no <size>")?;
    let width = positive(number(size, "width", "<size>")?, "width")?;
    let height = positive(number(size, "height", "<size>")?, "height")?;
    // ILSVRC's files name the image without its extension.
    if format == Format::Ilsvrc && Path::new(&file).extension().is_none() {
        file.push_str(".JPEG");
    }
    check_file_name(&file)?;
    let offset = match format {
        Format::Voc => 1.0,
        _ => 0.0,
    };
    let mut objects = Vec::new();
    for (i, o) in root
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "object")
        .enumerate()
    {
        let at = format!("<object> {}", i + 1);
        let label = text_of(o, "name", &at)?;
        if label.is_empty() {
            return Err(format!("{at} has an empty <name>"));
        }
        let difficult = match child(o, "difficult").and_then(|d| d.text()) {
            None => false,
            Some(t) => t.trim() == "1",
        };
        let b = child(o, "bndbox").ok_or_else(|| format!("{at} has no <bndbox>"))?;
        let at = format!("{at}'s <bndbox>");
        let corners = [
            number(b, "xmin", &at)? - offset,
            number(b, "ymin", &at)? - offset,
            number(b, "xmax", &at)? - offset,
            number(b, "ymax", &at)? - offset,
        ];
        let bbox = clipped(corners, width, height).map_err(|e| format!("{at}: {e}"))?;
        objects.push(Object {
            label,
            bbox,
            difficult,
        });
    }
    Ok(AnnotatedImage {
        file,
        width,
        height,
        objects,
    })
}

/// An image's name must stay inside the data folder.
fn check_file_name(file: &str) -> std::result::Result<(), String> {
    let p = Path::new(file);
    let inside = !file.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "image name `{file}` is not a relative path inside the data folder"
        ))
    }
}

/// Parses a COCO-style JSON annotation file.
pub fn parse_coco(text: &str) -> std::result::Result<Vec<AnnotatedImage>, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("no `{key}` list"))
    };
    let field_u64 = |o: &Value, key: &str, at: &str| {
        o.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{at} has no whole-number `{key}`"))
    };
    let mut categories = BTreeMap::new();
    for (i, c) in list("categories")?.iter().enumerate() {
        let at = format!("categories[{i}]");
        let id = field_u64(c, "id", &at)?;
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{at} has no `name`"))?;
        if categories.insert(id, name.to_string()).is_some() {
            return Err(format!("category id {id} appears twice"));
        }
    }
    let mut images = BTreeMap::new();
    for (i, im) in list("images")?.iter().enumerate() {
        let at = format!("images[{i}]");
        let id = field_u64(im, "id", &at)?;
        let file = im
            .get("file_name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at} has no `file_name`"))?;
        check_file_name(file)?;
        let width = positive(field_u64(im, "width", &at)? as f64, "width")?;
        let height = positive(field_u64(im, "height", &at)? as f64, "height")?;
        let img = AnnotatedImage {
            file: file.to_string(),
            width,
            height,
            objects: Vec::new(),
        };
        if images.insert(id, img).is_some() {
            return Err(format!("image id {id} appears twice"));
        }
    }
    for (i, a) in list("annotations")?.iter().enumerate() {
        let at = format!("annotations[{i}]");
        let image_id = field_u64(a, "image_id", &at)?;
        let category = field_u64(a, "category_id", &at)?;
        let label = categories
            .get(&category)
            .ok_or_else(|| format!("{at}: category {category} is not in `categories`"))?
            .clone();
        let img = images
            .get_mut(&image_id)
            .ok_or_else(|| format!("{at}: image {image_id} is not in `images`"))?;
        let b: Vec<f64> = a
            .get("bbox")
            .and_then(Value::as_array)
            .map(|b| b.iter().filter_map(Value::as_f64).collect())
            .filter(|b: &Vec<f64>| b.len() == 4)
            .ok_or_else(|| format!("{at} has no `bbox` of four numbers"))?;
        let [x, y, w, h] = [b[0], b[1], b[2], b[3]];
        if !(w > 0.0 && h > 0.0) {
            return Err(format!("{at}: bbox {b:?} has no area"));
        }
        // The pixels the box touches: [x, x + w) covers columns floor(x) to
        // ceil(x + w) - 1.
        let corners = [
            x.floor(),
            y.floor(),
            (x + w).ceil() - 1.0,
            (y + h).ceil() - 1.0,
        ];
        let bbox = clipped(corners, img.width, img.height).map_err(|e| format!("{at}: {e}"))?;
        let crowd = a.get("iscrowd").and_then(Value::as_u64).unwrap_or(0) == 1;
        img.objects.push(Object {
            label,
            bbox,
            difficult: crowd,
        });
    }
    Ok(images.into_values().collect())
}

/// Which model classes each dataset label means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassMap {
    map: BTreeMap<String, Vec<usize>>,
}

impl ClassMap {
    /// The 1000 ILSVRC-2012 synsets in torchvision's class order (sorted ids; the list
    /// ships with attrib, from timm's `imagenet_synsets.txt`).
    pub fn imagenet_synsets() -> Self {
        let map = include_str!("../data/imagenet_synsets.txt")
            .lines()
            .enumerate()
            .map(|(i, s)| (s.trim().to_string(), vec![i]))
            .collect();
        ClassMap { map }
    }

    /// A map from a JSON object `{"label": [class, ...] or class, ...}`.
    pub fn from_json(text: &str) -> Result<Self> {
        use serde_json::Value;
        let bad = |r: String| Error::param("class map", r);
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object from label to classes".into()))?;
        let mut map = BTreeMap::new();
        for (label, classes) in obj {
            let list: Option<Vec<usize>> = match classes {
                Value::Array(a) => a.iter().map(|c| c.as_u64().map(|c| c as usize)).collect(),
                c => c.as_u64().map(|c| vec![c as usize]),
            };
            match list {
                Some(l) if !l.is_empty() => {
                    map.insert(label.clone(), l);
                }
                _ => {
                    return Err(bad(format!(
                        "`{label}` maps to {classes}, not a class index or a list of them"
                    )))
                }
            }
        }
        Ok(ClassMap { map })
    }

    /// The classes `label` means; an unknown label is an error naming it.
    pub fn classes(&self, label: &str) -> Result<&[usize]> {
        self.map.get(label).map(Vec::as_slice).ok_or_else(|| {
            Error::param(
                "class map",
                format!("the label `{label}` is not in it; add it to --classes"),
            )
        })
    }

    /// Checks every class against a model's `num_classes` outputs.
    pub fn check(&self, num_classes: usize) -> Result<()> {
        for (label, classes) in &self.map {
            if let Some(&c) = classes.iter().find(|&&c| c >= num_classes) {
                return Err(Error::param(
                    "class map",
                    format!("`{label}` maps to class {c}; the model has {num_classes}"),
                ));
            }
        }
        Ok(())
    }
}
