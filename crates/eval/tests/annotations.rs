//! The annotation readers on hand-written files with known boxes: VOC's 1-based and
//! ILSVRC's 0-based corners, COCO's continuous boxes, clipping, detection of the
//! format, the class maps, and the damaged and hostile files they refuse.

use attrib_eval::annotations::{parse_coco, parse_voc, read, ClassMap, Format};
use attrib_eval::PixelBox;

fn voc_xml(file: &str, w: u32, h: u32, objects: &[(&str, [i64; 4], bool)]) -> String {
    let mut s = format!(
        "<annotation><filename>{file}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
    );
    for (name, [x0, y0, x1, y1], difficult) in objects {
        s += &format!(
            "<object><name>{name}</name><difficult>{}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>",
            *difficult as u8
        );
    }
    s + "</annotation>"
}

#[test]
fn voc_corners_are_one_based_and_ilsvrc_zero_based() {
    let text = voc_xml(
        "a.jpg",
        100,
        50,
        &[
            ("cat", [1, 1, 10, 20], false),
            ("dog", [50, 5, 100, 50], true),
        ],
    );
    let img = parse_voc(&text, Format::Voc).unwrap();
    assert_eq!(
        (img.file.as_str(), img.width, img.height),
        ("a.jpg", 100, 50)
    );
    assert_eq!(img.objects[0].bbox, PixelBox::new(0, 0, 9, 19).unwrap());
    assert_eq!(img.objects[1].bbox, PixelBox::new(49, 4, 99, 49).unwrap());
    assert!(img.objects[1].difficult && !img.objects[0].difficult);
    assert_eq!(img.labels(), vec!["cat", "dog"]);
    assert_eq!(img.boxes("dog").len(), 1);
    // ILSVRC: corners as they are, and the file name gains its extension.
    let text = voc_xml(
        "ILSVRC2012_val_00000001",
        100,
        50,
        &[("n01751748", [0, 0, 99, 49], false)],
    );
    let img = parse_voc(&text, Format::Ilsvrc).unwrap();
    assert_eq!(img.file, "ILSVRC2012_val_00000001.JPEG");
    assert_eq!(img.objects[0].bbox, PixelBox::new(0, 0, 99, 49).unwrap());
    // Boxes reaching past the image are clipped to it.
    let text = voc_xml("a.jpg", 100, 50, &[("cat", [-3, 1, 140, 60], false)]);
    let img = parse_voc(&text, Format::Voc).unwrap();
    assert_eq!(img.objects[0].bbox, PixelBox::new(0, 0, 99, 49).unwrap());
}

#[test]
fn the_format_is_detected_from_the_labels() {
    let d = std::env::temp_dir().join(format!("attrib-ann-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("voc")).unwrap();
    std::fs::create_dir_all(d.join("ilsvrc")).unwrap();
    std::fs::write(
        d.join("voc/b.xml"),
        voc_xml("b.jpg", 10, 10, &[("cat", [1, 1, 5, 5], false)]),
    )
    .unwrap();
    std::fs::write(
        d.join("voc/a.xml"),
        voc_xml("a.jpg", 10, 10, &[("n01751748", [1, 1, 5, 5], false)]),
    )
    .unwrap();
    std::fs::write(d.join("voc/notes.txt"), "not an annotation").unwrap();
    let imgs = read(&d.join("voc"), None).unwrap();
    // One label is not a synset: VOC, 1-based; sorted by image file.
    assert_eq!(
        imgs.iter().map(|i| i.file.as_str()).collect::<Vec<_>>(),
        ["a.jpg", "b.jpg"]
    );
    assert_eq!(imgs[0].objects[0].bbox, PixelBox::new(0, 0, 4, 4).unwrap());
    std::fs::write(
        d.join("ilsvrc/x.xml"),
        voc_xml("x", 10, 10, &[("n01751748", [1, 1, 5, 5], false)]),
    )
    .unwrap();
    let imgs = read(&d.join("ilsvrc"), None).unwrap();
    assert_eq!(imgs[0].file, "x.JPEG");
    assert_eq!(imgs[0].objects[0].bbox, PixelBox::new(1, 1, 5, 5).unwrap());
    // Forced VOC reads the same file 1-based.
    let imgs = read(&d.join("ilsvrc"), Some(Format::Voc)).unwrap();
    assert_eq!(imgs[0].objects[0].bbox, PixelBox::new(0, 0, 4, 4).unwrap());
    // Two annotations of one image.
    std::fs::write(d.join("voc/c.xml"), voc_xml("a.jpg", 10, 10, &[])).unwrap();
    let e = read(&d.join("voc"), None).unwrap_err().to_string();
    assert!(e.contains("two annotations for `a.jpg`"), "{e}");
    assert!(read(&d.join("missing"), None).is_err());
}

#[test]
fn coco_boxes_cover_the_pixels_they_touch() {
    let text = r#"{
        "images": [{"id": 7, "file_name": "p.jpg", "width": 100, "height": 80},
                   {"id": 3, "file_name": "o.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"image_id": 7, "category_id": 18, "bbox": [10.5, 20.0, 30.0, 9.2], "iscrowd": 0},
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 100, 80], "iscrowd": 1}
        ]}"#;
    let imgs = parse_coco(text).unwrap();
    // By id: o.jpg (id 3) has no box, p.jpg two.
    assert_eq!(imgs[0].file, "o.jpg");
    assert!(imgs[0].objects.is_empty());
    let p = &imgs[1];
    assert_eq!(p.objects[0].label, "dog");
    // Columns 10.5..40.5 touch 10..=40; rows 20..29.2 touch 20..=29.
    assert_eq!(p.objects[0].bbox, PixelBox::new(10, 20, 40, 29).unwrap());
    assert_eq!(p.objects[1].bbox, PixelBox::new(0, 0, 99, 79).unwrap());
    assert!(p.objects[1].difficult, "iscrowd");
}

#[test]
fn damaged_and_hostile_annotations_are_errors_that_say_why() {
    let cases = [
        ("<annotation>", "not XML"),
        ("<root/>", "not <annotation>"),
        ("<annotation><size><width>5</width><height>5</height></size></annotation>", "no <filename>"),
        ("<annotation><filename>a</filename></annotation>", "no <size>"),
        ("<annotation><filename>a</filename><size><width>0</width><height>5</height></size></annotation>", "width 0"),
        ("<annotation><filename>a</filename><size><width>1e9</width><height>5</height></size></annotation>", "width"),
        ("<annotation><filename>/etc/passwd</filename><size><width>5</width><height>5</height></size></annotation>", "inside the data folder"),
        ("<annotation><filename>a/../../b</filename><size><width>5</width><height>5</height></size></annotation>", "inside the data folder"),
    ];
    for (text, needle) in cases {
        let e = parse_voc(text, Format::Voc).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
    let bad_box = |b: [i64; 4]| {
        parse_voc(&voc_xml("a", 10, 10, &[("c", b, false)]), Format::Voc).unwrap_err()
    };
    assert!(bad_box([5, 5, 2, 8]).contains("wrong way round"));
    assert!(bad_box([20, 20, 30, 30]).contains("outside"));
    let e = parse_voc("<annotation><filename>a</filename><size><width>5</width><height>5</height></size><object><name>c</name><bndbox><xmin>x</xmin></bndbox></object></annotation>", Format::Voc).unwrap_err();
    assert!(e.contains("`x` is not a number"), "{e}");
    let coco = [
        ("[]", "no `categories`"),
        (
            r#"{"categories": [], "images": [], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0,0,1,1]}]}"#,
            "category 1",
        ),
        (
            r#"{"categories": [{"id": 1, "name": "a"}], "images": [], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0,0,1,1]}]}"#,
            "image 1",
        ),
        (
            r#"{"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1, "file_name": "x", "width": 4, "height": 4}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0,0,0,1]}]}"#,
            "no area",
        ),
        (
            r#"{"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1, "file_name": "x", "width": 4, "height": 4}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0,0,1]}]}"#,
            "four numbers",
        ),
        (
            r#"{"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "images": [], "annotations": []}"#,
            "twice",
        ),
    ];
    for (text, needle) in coco {
        let e = parse_coco(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn class_maps_name_what_they_lack() {
    let synsets = ClassMap::imagenet_synsets();
    // torchvision's order: sorted synset ids; tench first, toilet tissue last.
    assert_eq!(synsets.classes("n01440764").unwrap(), &[0]);
    assert_eq!(synsets.classes("n15075141").unwrap(), &[999]);
    assert_eq!(synsets.classes("n02123045").unwrap(), &[281], "tabby");
    assert!(synsets.check(1000).is_ok());
    assert!(synsets
        .check(10)
        .unwrap_err()
        .to_string()
        .contains("the model has 10"));
    let m = ClassMap::from_json(r#"{"cat": [281, 285], "cup": 968}"#).unwrap();
    assert_eq!(m.classes("cat").unwrap(), &[281, 285]);
    assert_eq!(m.classes("cup").unwrap(), &[968]);
    assert!(m.classes("dog").unwrap_err().to_string().contains("`dog`"));
    for bad in ["[]", r#"{"a": "b"}"#, r#"{"a": []}"#, r#"{"a": [-1]}"#, "{"] {
        assert!(ClassMap::from_json(bad).is_err(), "{bad}");
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the bytes, the readers answer with an annotation or an error,
        /// never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse_voc(&text, Format::Voc);
            let _ = parse_voc(&text, Format::Ilsvrc);
            let _ = parse_coco(&text);
            let _ = ClassMap::from_json(&text);
        }

        /// Well-formed files with arbitrary numbers: boxes inside the image come back
        /// exactly (minus VOC's 1), anything else is an error, never a panic.
        #[test]
        fn voc_boxes_round_trip(
            w in 1u32..3000, h in 1u32..3000,
            corners in prop::array::uniform4(-5000i64..5000),
        ) {
            let text = voc_xml("a.jpg", w, h, &[("x", corners, false)]);
            let [x0, y0, x1, y1] = corners;
            match parse_voc(&text, Format::Voc) {
                Ok(img) => {
                    let b = img.objects[0].bbox;
                    prop_assert!(x0 <= x1 && y0 <= y1);
                    prop_assert!(b.x1 < w as usize && b.y1 < h as usize);
                    if x0 >= 1 && y0 >= 1 && x1 <= w as i64 && y1 <= h as i64 {
                        prop_assert_eq!(
                            b,
                            PixelBox::new(x0 as usize - 1, y0 as usize - 1, x1 as usize - 1, y1 as usize - 1).unwrap()
                        );
                    }
                }
                Err(e) => prop_assert!(
                    x1 < x0 || y1 < y0 || x1 < 1 || y1 < 1 || x0 > w as i64 || y0 > h as i64,
                    "{e}"
                ),
            }
        }

        #[test]
        fn coco_numbers_never_panic(
            x in -1e12f64..1e12, y in -1e12f64..1e12,
            bw in -10.0f64..1e12, bh in -10.0f64..1e12,
            w in 0u64..5000, h in 0u64..5000,
        ) {
            let text = format!(
                r#"{{"categories": [{{"id": 1, "name": "a"}}], "images": [{{"id": 1, "file_name": "x.jpg", "width": {w}, "height": {h}}}],
                    "annotations": [{{"image_id": 1, "category_id": 1, "bbox": [{x}, {y}, {bw}, {bh}]}}]}}"#
            );
            if let Ok(imgs) = parse_coco(&text) {
                let b = imgs[0].objects[0].bbox;
                prop_assert!(b.x1 < w as usize && b.y1 < h as usize && b.x0 <= b.x1 && b.y0 <= b.y1);
            }
        }
    }
}

#[test]
fn entity_bombs_are_refused_or_bounded() {
    // "Billion laughs": ten levels of ten-fold entity expansion.
    let mut dtd = String::from("<!DOCTYPE annotation [<!ENTITY l0 \"ha\">");
    for i in 1..10 {
        let prev = format!("&l{};", i - 1).repeat(10);
        dtd += &format!("<!ENTITY l{i} \"{prev}\">");
    }
    dtd += "]>";
    let text = format!(
        "{dtd}<annotation><filename>&l9;</filename><size><width>5</width><height>5</height></size></annotation>"
    );
    let r = parse_voc(&text, Format::Voc);
    // Either refused or a name of bounded length; never gigabytes.
    if let Ok(img) = r {
        assert!(img.file.len() < 1 << 20);
    }
}
