//! DenseCap's Fully Convolutional Localization Network (Johnson, Karpathy & Fei-Fei,
//! CVPR 2016): region proposals and a caption for each, as the reference module of
//! `tools/reference/densecap.py` defines it (the paper's model was Lua Torch; there is
//! no canonical PyTorch one). State-dict names, all in one file:
//!
//! - `trunk.features.N`: the image trunk, recognised from the weights as the
//!   captioner's are ([`Trunk`]): VGG-16's conv layers up to conv5_3 (torchvision's
//!   `features.0`-`29`: 3x3 convolutions with ReLU, max pools after the 2nd, 4th, 7th
//!   and 10th, stride 16) or any such stack ending in a convolution and its ReLU, or
//!   a torchvision ResNet as an `nn.Sequential` (`0` conv1, `1` bn1, `4`-`7`
//!   layer1-layer4, stride 32). Its last ReLU is the default layer, the one the
//!   Grad-CAM paper explains DenseCap at.
//! - `loc.conv` (3x3) + ReLU, `loc.box` (1x1, 4 offsets per anchor) and `loc.score`
//!   (1x1, 1 score per anchor): the localisation layer; `loc.anchors` `(k, 2)`: the
//!   `(w, h)` of the k anchors, in image pixels, each centred on every cell
//!   (`((j + 0.5) s, (i + 0.5) s)` for cell `(i, j)` at stride `s`); anchor index
//!   `(i W + j) k + a`, box channel `4 a + c`.
//! - `recog.0`, `recog.2`: the recognition network's two fully connected layers, each
//!   with a ReLU, on the flattened `7 x 7` RoI Align of a box (torchvision's
//!   `roi_align`, spatial scale `1/s`, sampling ratio 2, `aligned=False`); `refine` (4
//!   box offsets) and `objectness` (1 score) on the region code.
//! - `project`: the region code to the LSTM's first input; then the captioner's
//!   decoder names, `embed`, `lstm`, `linear` (see [`Decoder`]).
//!
//! Proposals are test-time only, as in the paper: the anchors' boxes decoded, clipped
//! to the image, ranked by score, the best [`Proposals::pre_nms`] kept, non-maximum
//! suppression at IoU [`Proposals::iou`], the first [`Proposals::top`] of those.
//!
//! To explain regions, [`DenseCap::conditioned`] makes the image-in, scores-out
//! [`Model`](attrib_core::Model) whose row `r` is region `r`: the image it lies in, its
//! box (a constant) and a caption; its scores are the caption's token
//! log-probabilities, as the captioner's. The rows of one image are equal, so the
//! trunk below the first recorded layer runs once for all of them (see
//! [`Network`]'s passes): for Grad-CAM at the trunk's last layer, one trunk forward
//! explains every region.

use std::path::Path;

use attrib_core::{Error, Rectifier, RectifierKind, Result};
use dfdx::tensor::Tape;
use ndarray::{Array4, ArrayView4};

use super::params::{conv_cfg, Dense, Params};
use super::show_and_tell::{shape_of, CaptionHead, Decoder, DecoderSpec};
use super::trunks::Trunk;
use crate::graph::{Head, WithHead};
use crate::kernels::boxes::{self, Box4};
use crate::kernels::{Roi, RoiAlign};
use crate::ops::{self, region, Tensor4};
use crate::weights::{ParamKind, ParamSource, StrictWeights, Synthetic, WeightMap};
use crate::{Conv2d, Cpu, Elem, KernelDevice, Network, NetworkBuilder};

/// The trunk's module prefix.
pub const TRUNK: &str = "trunk.features";
/// The RoI Align grid the recognition network reads.
pub const ROI_GRID: usize = 7;
/// RoI Align's samples per bin side.
pub const ROI_SAMPLING: i32 = 2;

/// How test-time proposals are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposals {
    /// Anchors kept by score before suppression.
    pub pre_nms: usize,
    /// Suppression threshold (IoU).
    pub iou: f64,
    /// Proposals kept after suppression.
    pub top: usize,
}

impl Default for Proposals {
    /// The reference's: 60 before suppression, IoU 0.7 (the paper's), 10 after.
    fn default() -> Self {
        Proposals {
            pre_nms: 60,
            iou: 0.7,
            top: 10,
        }
    }
}

/// One proposal: its box in image pixels, the localisation layer's score (a logit)
/// and the anchor it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// `[x1, y1, x2, y2]`.
    pub bbox: Box4,
    /// The anchor's score.
    pub score: f64,
    /// The anchor's index (`(i W + j) k + a`).
    pub anchor: usize,
}

/// The sizes of a DenseCap model beyond its trunk.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseCapSpec {
    /// Channels of the localisation layer's 3x3 convolution.
    pub loc: usize,
    /// Width of the recognition network's fully connected layers.
    pub fc: usize,
    /// The anchors' `(w, h)`, in image pixels.
    pub anchors: Vec<[f64; 2]>,
    /// The language model (its `embed` is the projection's output).
    pub decoder: DecoderSpec,
}

/// What the recognition network says of a region.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition<E> {
    /// The region code `(fc)`, after both fully connected layers.
    pub code: Vec<E>,
    /// The projected code: the LSTM's first input.
    pub projected: Vec<E>,
    /// The final objectness score (a logit).
    pub objectness: f64,
    /// The box refined by the `refine` offsets.
    pub refined: Box4,
}

/// A DenseCap model.
#[derive(Debug, Clone)]
pub struct DenseCap<E: Elem> {
    /// Image -> feature map `(N, C, H/s, W/s)`; its layers are the taps
    /// (`trunk.features.*`).
    pub trunk: Network<E>,
    /// The trunk's kind.
    pub trunk_kind: Trunk,
    /// Feature map -> `(N, 5k, h, w)`: `loc.conv`, its ReLU, then `loc.box` and
    /// `loc.score` as one 1x1 convolution (box channels first).
    loc: Network<E>,
    anchors: Vec<[f64; 2]>,
    roi: RoiAlign,
    recog: [Dense<E>; 2],
    refine: Dense<E>,
    objectness: Dense<E>,
    project: Dense<E>,
    /// The language model.
    pub decoder: Decoder<E>,
}

impl<E: Elem> DenseCap<E> {
    /// Loads a checkpoint (safetensors or `.pth`).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_weights(WeightMap::load(path)?).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("{}: {m}", path.display())),
            o => o,
        })
    }

    /// From a state dict, strictly: every tensor used, every shape checked.
    pub fn from_weights(map: WeightMap) -> Result<Self> {
        let trunk_kind = Trunk::recognise(&map, TRUNK)?;
        // The first dimension of a tensor: a layer's width, which the strict
        // loading then checks against every other shape.
        let rows = |key: &str, what: &str| -> Result<usize> {
            let shape = shape_of(&map, key, what)?;
            shape
                .first()
                .copied()
                .ok_or_else(|| Error::Weights(format!("`{key}` is a scalar; expected {what}")))
        };
        let an = shape_of(&map, "loc.anchors", "the anchors' (w, h)")?;
        let [k, 2] = an[..] else {
            return Err(Error::Weights(format!(
                "`loc.anchors` has shape {an:?}; expected (k, 2): each anchor's width and height"
            )));
        };
        if k == 0 {
            return Err(Error::Weights("`loc.anchors` holds no anchor".into()));
        }
        let loc_c = rows("loc.conv.weight", "the localisation layer")?;
        let fc = rows("recog.0.weight", "the recognition network")?;
        let embed = rows("project.weight", "the projection to the LSTM")?;
        let spec = Decoder::<E>::spec(&map)?;
        if spec.embed != embed {
            return Err(Error::Weights(format!(
                "`project.weight` gives the LSTM inputs of {embed}, but the words are embedded in {} (`embed.weight`)",
                spec.embed
            )));
        }
        let mut src = StrictWeights::new(map);
        let anchors_flat =
            ParamSource::<E>::take(&mut src, "loc.anchors", &[k, 2], ParamKind::Weight)?;
        let anchors: Vec<[f64; 2]> = anchors_flat
            .chunks(2)
            .map(|a| [a[0].as_f64(), a[1].as_f64()])
            .collect();
        let sizes = DenseCapSpec {
            loc: loc_c,
            fc,
            anchors,
            decoder: spec,
        };
        let model = Self::build(&mut src, trunk_kind, sizes)?;
        ParamSource::<E>::finish(&mut src)?;
        Ok(model)
    }

    /// Deterministic pseudo-random weights ([`Synthetic`]) with `trunk` under
    /// `trunk.features` and the sizes of `spec`: for tests of other trunks than the
    /// bundled model's.
    pub fn synthetic(seed: u64, trunk: Trunk, spec: DenseCapSpec) -> Result<Self> {
        Self::build(&mut Synthetic::new(seed, 0), trunk, spec)
    }

    fn build(src: &mut dyn ParamSource<E>, trunk_kind: Trunk, s: DenseCapSpec) -> Result<Self> {
        if let Some(a) = s
            .anchors
            .iter()
            .find(|a| !(a[0].is_finite() && a[1].is_finite() && a[0] > 0.0 && a[1] > 0.0))
        {
            return Err(Error::Weights(format!(
                "`loc.anchors` has an anchor of size {a:?}; sizes are positive"
            )));
        }
        if s.anchors.is_empty() {
            return Err(Error::Weights("`loc.anchors` holds no anchor".into()));
        }
        let mut b = NetworkBuilder::new([3, 224, 224]);
        b.ends_in_map();
        let c = {
            let mut p = Params {
                src: &mut *src,
                b: &mut b,
            };
            trunk_kind.build_map(&mut p, TRUNK)?
        };
        let trunk = b.build()?;
        let loc = build_loc(src, c, s.loc, s.anchors.len())?;
        let cells = ROI_GRID * ROI_GRID;
        let recog = [
            Dense::take(src, "recog.0", s.fc, c * cells)?,
            Dense::take(src, "recog.2", s.fc, s.fc)?,
        ];
        let refine = Dense::take(src, "refine", 4, s.fc)?;
        let objectness = Dense::take(src, "objectness", 1, s.fc)?;
        let project = Dense::take(src, "project", s.decoder.embed, s.fc)?;
        let decoder = Decoder::build(src, s.decoder)?;
        let stride = trunk_kind.stride();
        let roi = RoiAlign::new(ROI_GRID, ROI_GRID, 1.0 / stride as f64, ROI_SAMPLING, false)?;
        Ok(DenseCap {
            trunk,
            trunk_kind,
            loc,
            anchors: s.anchors,
            roi,
            recog,
            refine,
            objectness,
            project,
            decoder,
        })
    }

    /// Image pixels per feature-map cell.
    pub fn stride(&self) -> usize {
        self.trunk_kind.stride()
    }

    /// The anchors' `(w, h)`.
    pub fn anchor_sizes(&self) -> &[[f64; 2]] {
        &self.anchors
    }

    /// The trunk's feature map of `images` `(N, C, h, w)`.
    pub fn feature_map(&self, images: ArrayView4<E>) -> Result<Array4<E>> {
        self.trunk.output_map(images)
    }

    /// Test-time proposals for every image, from its feature map `(N, C, h, w)` (see
    /// [`DenseCap::feature_map`]); `size` is the images' `(height, width)`.
    pub fn proposals(
        &self,
        features: ArrayView4<E>,
        size: (usize, usize),
        how: Proposals,
    ) -> Result<Vec<Vec<Proposal>>> {
        if how.top == 0 || how.pre_nms == 0 {
            return Err(Error::param(
                "proposals",
                "the numbers kept before and after suppression must be positive",
            ));
        }
        if !(how.iou.is_finite() && (0.0..=1.0).contains(&how.iou)) {
            return Err(Error::param(
                "proposals",
                format!("the suppression IoU {} is not in [0, 1]", how.iou),
            ));
        }
        let out = self.loc.output_map(features)?;
        let (n, _, fh, fw) = out.dim();
        let k = self.anchors.len();
        let s = self.stride() as f64;
        let (height, width) = (size.0 as f64, size.1 as f64);
        let mut all = Vec::with_capacity(n);
        for b in 0..n {
            let mut cand: Vec<(f64, usize, Box4)> = Vec::with_capacity(fh * fw * k);
            for i in 0..fh {
                for j in 0..fw {
                    let (cx, cy) = ((j as f64 + 0.5) * s, (i as f64 + 0.5) * s);
                    for (a, &[aw, ah]) in self.anchors.iter().enumerate() {
                        let score = out[[b, 4 * k + a, i, j]].as_f64();
                        let d = [0, 1, 2, 3].map(|c| out[[b, 4 * a + c, i, j]].as_f64());
                        let anchor = [cx - aw / 2.0, cy - ah / 2.0, cx + aw / 2.0, cy + ah / 2.0];
                        cand.push((score, (i * fw + j) * k + a, boxes::decode(&anchor, &d)));
                    }
                }
            }
            if let Some(c) = cand.iter().find(|c| !c.0.is_finite()) {
                return Err(Error::Backend(format!(
                    "the localisation layer's score of anchor {} is {}",
                    c.1, c.0
                )));
            }
            // Stable, as the ranking of equal scores must not depend on the sort.
            cand.sort_by(|x, y| y.0.total_cmp(&x.0));
            cand.truncate(how.pre_nms);
            let clipped: Vec<Box4> = cand
                .iter()
                .map(|c| boxes::clip(&c.2, height, width))
                .collect();
            let scores: Vec<f64> = cand.iter().map(|c| c.0).collect();
            let keep = boxes::nms(&clipped, &scores, how.iou)?;
            all.push(
                keep.into_iter()
                    .take(how.top)
                    .map(|q| Proposal {
                        bbox: clipped[q],
                        score: cand[q].0,
                        anchor: cand[q].1,
                    })
                    .collect(),
            );
        }
        Ok(all)
    }

    /// The recognition network on `bbox` of item `item` of the feature map (host
    /// computation: what captioning and scoring a region need).
    pub fn recognise(
        &self,
        features: ArrayView4<E>,
        item: usize,
        bbox: Box4,
    ) -> Result<Recognition<E>> {
        let (n, c, h, w) = features.dim();
        check_box(&bbox, "region")?;
        if item >= n {
            return Err(Error::param(
                "region",
                format!("image {item} is not in a batch of {n}"),
            ));
        }
        // Called once per region: copy the map only when it is not contiguous.
        let owned: Vec<E>;
        let host = match features.as_slice() {
            Some(s) => s,
            None => {
                owned = features.iter().copied().collect();
                &owned
            }
        };
        let mut pooled = vec![E::zero(); c * self.roi.bins()];
        let roi: Roi = [item as f64, bbox[0], bbox[1], bbox[2], bbox[3]];
        self.roi.forward([n, c, h, w], host, &[roi], &mut pooled)?;
        let relu = |v: Vec<E>| -> Vec<E> { v.into_iter().map(|x| x.max(E::zero())).collect() };
        let code = relu(self.recog[1].host(1, &relu(self.recog[0].host(1, &pooled))));
        let projected = self.project.host(1, &code);
        let objectness = self.objectness.host(1, &code)[0].as_f64();
        let d = self.refine.host(1, &code);
        let refined = boxes::decode(&bbox, &[0, 1, 2, 3].map(|i| d[i].as_f64()));
        Ok(Recognition {
            code,
            projected,
            objectness,
            refined,
        })
    }

    /// The model conditioned on `regions`, one per row: the box (image pixels) and
    /// the caption's token ids (`<start> ... <end>`). Row `r` of the input must be
    /// the image region `r` lies in.
    pub fn conditioned(
        &self,
        regions: &[(Box4, Vec<usize>)],
    ) -> Result<WithHead<'_, E, Cpu, RegionHead<'_, E>>> {
        for (i, (b, _)) in regions.iter().enumerate() {
            check_box(b, &format!("region {i}"))?;
        }
        let captions: Vec<Vec<usize>> = regions.iter().map(|r| r.1.clone()).collect();
        Ok(WithHead::new(
            &self.trunk,
            RegionHead {
                model: self,
                boxes: regions.iter().map(|r| r.0).collect(),
                captions: CaptionHead::new(&self.decoder, &captions)?,
            },
        ))
    }
}

/// A box is four finite numbers with `x1 <= x2`, `y1 <= y2`.
fn check_box(b: &Box4, what: &str) -> Result<()> {
    if b.iter().any(|v| !v.is_finite()) || b[2] < b[0] || b[3] < b[1] {
        return Err(Error::param(
            what,
            format!("the box {b:?} is not x1,y1,x2,y2 with x1 <= x2 and y1 <= y2"),
        ));
    }
    Ok(())
}

/// The localisation layer as a network on the feature map.
fn build_loc<E: Elem>(
    src: &mut dyn ParamSource<E>,
    c: usize,
    loc_c: usize,
    k: usize,
) -> Result<Network<E>> {
    let mut b = NetworkBuilder::new([c, 14, 14]);
    b.ends_in_map();
    let w = src.take("loc.conv.weight", &[loc_c, c, 3, 3], ParamKind::Weight)?;
    let bias = src.take("loc.conv.bias", &[loc_c], ParamKind::Bias)?;
    b.conv2d(
        "loc.conv",
        Conv2d::from_vec(w, [loc_c, c, 3, 3], Some(bias), conv_cfg(1, 1))?,
    )?;
    b.relu("loc.relu")?;
    let mut w = src.take("loc.box.weight", &[4 * k, loc_c, 1, 1], ParamKind::Weight)?;
    let mut bias = src.take("loc.box.bias", &[4 * k], ParamKind::Bias)?;
    w.extend(src.take("loc.score.weight", &[k, loc_c, 1, 1], ParamKind::Weight)?);
    bias.extend(src.take("loc.score.bias", &[k], ParamKind::Bias)?);
    b.conv2d(
        "loc.out",
        Conv2d::from_vec(w, [5 * k, loc_c, 1, 1], Some(bias), conv_cfg(1, 0))?,
    )?;
    b.build()
}

/// Everything above the trunk for one region per row, as a [`Head`]: RoI Align of the
/// row's box (a constant), the recognition network (its ReLUs back-propagate by the
/// pass's rule), the projection, and the decoder's caption log-probabilities.
#[derive(Debug, Clone)]
pub struct RegionHead<'a, E: Elem> {
    model: &'a DenseCap<E>,
    boxes: Vec<Box4>,
    captions: CaptionHead<'a, E>,
}

impl<E: Elem, D: KernelDevice<E>> Head<E, D> for RegionHead<'_, E> {
    fn num_outputs(&self, inputs: usize) -> usize {
        <CaptionHead<'_, E> as Head<E, D>>::num_outputs(&self.captions, inputs)
    }

    fn scores<T: Tape<E, D>>(
        &self,
        x: &Tensor4<E, D>,
        rule: Rectifier,
        tape: &mut T,
    ) -> Result<Tensor4<E, D>> {
        let m = self.model;
        let n = ops::dims(x)[0];
        if n != self.boxes.len() {
            return Err(Error::shape(
                "regions",
                format!("{n} (one per batch row)"),
                self.boxes.len(),
            ));
        }
        let rois: Vec<Roi> = self
            .boxes
            .iter()
            .enumerate()
            .map(|(r, b)| [r as f64, b[0], b[1], b[2], b[3]])
            .collect();
        let f = region::roi_align_op(x, &rois, m.roi, tape)?;
        let mut f = ops::flatten_op(&f, tape)?;
        for d in &m.recog {
            f = ops::linear_op(&f, &d.w, d.shape, Some(&d.b), None, tape)?;
            f = ops::rectify_op(&f, RectifierKind::Relu, rule, tape)?;
        }
        let p = &m.project;
        let f = ops::linear_op(&f, &p.w, p.shape, Some(&p.b), None, tape)?;
        self.captions.scores(&f, rule, tape)
    }

    fn select(&self, items: &[usize]) -> Result<Self> {
        let boxes = items
            .iter()
            .map(|&i| {
                self.boxes.get(i).copied().ok_or_else(|| {
                    Error::param(
                        "item",
                        format!("{i} is beyond the {} regions", self.boxes.len()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RegionHead {
            model: self.model,
            boxes,
            captions: <CaptionHead<'_, E> as Head<E, D>>::select(&self.captions, items)?,
        })
    }
}
