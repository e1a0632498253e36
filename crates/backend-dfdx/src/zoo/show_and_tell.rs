//! Show and Tell captioning (Vinyals et al.), in the layout of the most used PyTorch
//! tutorial (yunjey/pytorch-tutorial, `image_captioning/model.py`).
//!
//! Encoder file: the image trunk under `resnet.` (torchvision's ResNet without `fc`
//! as an `nn.Sequential`: `resnet.0` conv1, `resnet.1` bn1, `resnet.4`-`resnet.7`
//! layer1-layer4; ResNet-18 to 152 recognised from the weights) or `cnn.` (a stack of
//! convolutions, see [`Trunk::Convs`]), then `linear` and `bn` (BatchNorm1d).
//! Decoder file: `embed`, `lstm` (`weight_ih_l0`, ...; the layer count from the
//! weights), `linear`.
//!
//! A caption is `<start>`, its words, `<end>`. Under teacher forcing the LSTM's
//! inputs are the image feature, then the embeddings of the caption's tokens but the
//! last, and step `t`'s output predicts token `t`. As a [`Model`](attrib_core::Model)
//! conditioned on captions, the scores of an item are the log-probabilities of its
//! tokens after `<start>`: output `k < n` is word `k` (0-based), output `n` is
//! `<end>`. Items with shorter captions than the longest in the batch have NaN
//! scores past their end (a target on one is an error).

use std::path::Path;
use std::sync::Arc;

use attrib_core::{Error, Rectifier, Result};
use dfdx::tensor::Tape;
use ndarray::ArrayView4;

use super::params::Params;
use super::text::Vocab;
use super::trunks::Trunk;
use crate::graph::{Head, WithHead};
use crate::kernels;
use crate::ops::sequence::{self as seq, Lstm};
use crate::ops::{self, Tensor4};
use crate::weights::{ParamKind, ParamSource, StrictWeights, Synthetic, WeightMap};
use crate::{Cpu, Elem, KernelDevice, Network, NetworkBuilder};

const TORCH_BN_EPS: f64 = 1e-5;

/// The decoder: word embeddings, the LSTM and the output projection.
#[derive(Debug, Clone)]
pub struct Decoder<E: Elem> {
    embed: Arc<Vec<E>>,
    embed_dim: usize,
    vocab: usize,
    lstm: Arc<Lstm<E>>,
    out_w: Arc<Vec<E>>,
    out_b: Arc<Vec<E>>,
}

/// The sizes of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderSpec {
    /// Vocabulary size.
    pub vocab: usize,
    /// Embedding size (the encoder's feature size).
    pub embed: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// LSTM layers.
    pub layers: usize,
}

/// Reads an LSTM's `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`
/// under `name` from `src`.
pub(super) fn take_lstm<E: Elem>(
    src: &mut dyn ParamSource<E>,
    name: &str,
    input: usize,
    hidden: usize,
    layers: usize,
) -> Result<Lstm<E>> {
    let per = (0..layers)
        .map(|k| {
            let d = if k == 0 { input } else { hidden };
            Ok([
                src.take(
                    &format!("{name}.weight_ih_l{k}"),
                    &[4 * hidden, d],
                    ParamKind::Weight,
                )?,
                src.take(
                    &format!("{name}.weight_hh_l{k}"),
                    &[4 * hidden, hidden],
                    ParamKind::Weight,
                )?,
                src.take(
                    &format!("{name}.bias_ih_l{k}"),
                    &[4 * hidden],
                    ParamKind::Bias,
                )?,
                src.take(
                    &format!("{name}.bias_hh_l{k}"),
                    &[4 * hidden],
                    ParamKind::Bias,
                )?,
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    Lstm::new(input, hidden, per)
}

/// An LSTM's sizes from a state dict: `(input, hidden, layers)`.
pub(super) fn lstm_sizes(map: &WeightMap, name: &str) -> Result<(usize, usize, usize)> {
    let shape = |k: &str| map.get(&format!("{name}.{k}")).map(|t| t.shape.clone());
    let layers = (0..)
        .take_while(|k| shape(&format!("weight_ih_l{k}")).is_some())
        .count();
    match (shape("weight_ih_l0").as_deref(), shape("weight_hh_l0").as_deref()) {
        (Some(&[g, d]), Some(&[g2, h])) if g == 4 * h && g2 == g && h > 0 => Ok((d, h, layers)),
        (a, b) => Err(Error::Weights(format!(
            "`{name}`: expected an nn.LSTM (`weight_ih_l0` [4H, D], `weight_hh_l0` [4H, H]), found {a:?} and {b:?}"
        ))),
    }
}

/// The shape of `key`, or an error naming it.
pub(super) fn shape_of(map: &WeightMap, key: &str, what: &str) -> Result<Vec<usize>> {
    map.get(key)
        .map(|t| t.shape.clone())
        .ok_or_else(|| Error::Weights(format!("missing tensor `{key}` ({what})")))
}

impl<E: Elem> Decoder<E> {
    /// Builds from `src` with the given sizes.
    pub fn build(src: &mut dyn ParamSource<E>, s: DecoderSpec) -> Result<Self> {
        let embed = src.take("embed.weight", &[s.vocab, s.embed], ParamKind::Weight)?;
        let lstm = take_lstm(src, "lstm", s.embed, s.hidden, s.layers)?;
        let out_w = src.take("linear.weight", &[s.vocab, s.hidden], ParamKind::Weight)?;
        let out_b = src.take("linear.bias", &[s.vocab], ParamKind::Bias)?;
        Ok(Decoder {
            embed: Arc::new(embed),
            embed_dim: s.embed,
            vocab: s.vocab,
            lstm: Arc::new(lstm),
            out_w: Arc::new(out_w),
            out_b: Arc::new(out_b),
        })
    }

    /// The sizes a decoder state dict has.
    pub fn spec(map: &WeightMap) -> Result<DecoderSpec> {
        let e = shape_of(map, "embed.weight", "the word embeddings")?;
        let [vocab, embed] = e[..] else {
            return Err(Error::Weights(format!("`embed.weight` has shape {e:?}")));
        };
        let (input, hidden, layers) = lstm_sizes(map, "lstm")?;
        if input != embed {
            return Err(Error::Weights(format!(
                "the LSTM takes inputs of {input} (`lstm.weight_ih_l0`) but the embeddings are {embed} wide (`embed.weight` {e:?})"
            )));
        }
        Ok(DecoderSpec {
            vocab,
            embed,
            hidden,
            layers,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Embedding size.
    pub fn embed_size(&self) -> usize {
        self.embed_dim
    }

    /// Checks that `vocab` has one token per row of the word embeddings.
    pub fn check_vocab(&self, vocab: &Vocab) -> Result<()> {
        if vocab.len() != self.vocab {
            return Err(Error::shape(
                "vocabulary",
                format!("{} tokens (the decoder's `embed.weight` rows)", self.vocab),
                format!("{} lines", vocab.len()),
            ));
        }
        Ok(())
    }

    /// The log-probabilities of the next token after feeding `feature` then the
    /// embeddings of `prefix` (host computation, no tape): what decoding needs.
    pub fn next_log_probs(&self, feature: &[E], prefix: &[usize]) -> Result<Vec<E>> {
        let e = self.embed_dim;
        let mut x = feature.to_vec();
        for &tok in prefix {
            let row = self.embed.get(tok * e..(tok + 1) * e).ok_or_else(|| {
                Error::param("token", format!("{tok} is beyond the {} words", self.vocab))
            })?;
            x.extend_from_slice(row);
        }
        let t = prefix.len() + 1;
        let (h, ..) = kernels::lstm_forward(&self.lstm.layers, 1, t, &x);
        let hid = self.lstm.hidden_size();
        let mut logits = vec![E::zero(); self.vocab];
        kernels::linear_forward(
            1,
            hid,
            self.vocab,
            &h[(t - 1) * hid..],
            &self.out_w,
            Some(&self.out_b),
            &mut logits,
        );
        let mut lp = vec![E::zero(); self.vocab];
        kernels::log_softmax_forward(self.vocab, &logits, &mut lp);
        Ok(lp)
    }

    /// Greedy decoding as the tutorial's `sample`: feed the feature, then each
    /// argmax, for `max_len` steps; the raw token ids (the first is normally
    /// `<start>`).
    pub fn greedy(&self, feature: &[E], max_len: usize) -> Result<Vec<usize>> {
        let mut ids = Vec::with_capacity(max_len);
        for _ in 0..max_len {
            let lp = self.next_log_probs(feature, &ids)?;
            ids.push(argmax(&lp));
        }
        Ok(ids)
    }

    /// Beam search with `beam` hypotheses: from `<start>` (fed after the feature),
    /// each step extends every unfinished hypothesis by its `beam` best tokens and
    /// keeps the `beam` best by total log-probability; a hypothesis ends at `end` or
    /// after `max_len` words. Returns the best, `<start> ... <end>`, and its total
    /// log-probability (of the tokens after `<start>`).
    pub fn beam_search(
        &self,
        feature: &[E],
        beam: usize,
        max_len: usize,
        start: usize,
        end: usize,
    ) -> Result<(Vec<usize>, f64)> {
        if beam == 0 {
            return Err(Error::param("--beam", "must be positive"));
        }
        let mut live: Vec<(Vec<usize>, f64)> = vec![(vec![start], 0.0)];
        let mut done: Vec<(Vec<usize>, f64)> = Vec::new();
        for _ in 0..=max_len {
            let mut next: Vec<(Vec<usize>, f64)> = Vec::new();
            for (toks, score) in &live {
                let lp = self.next_log_probs(feature, toks)?;
                let mut order: Vec<usize> = (0..lp.len()).collect();
                order.sort_by(|&a, &b| lp[b].as_f64().total_cmp(&lp[a].as_f64()));
                for &tok in order.iter().take(beam) {
                    let mut t = toks.clone();
                    t.push(tok);
                    next.push((t, score + lp[tok].as_f64()));
                }
            }
            next.sort_by(|a, b| b.1.total_cmp(&a.1));
            next.truncate(beam);
            live.clear();
            for (t, s) in next {
                if t.last() == Some(&end) || t.len() > max_len + 1 {
                    done.push((t, s));
                } else {
                    live.push((t, s));
                }
            }
            if live.is_empty() {
                break;
            }
        }
        done.extend(live);
        done.into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| Error::Backend("beam search kept no hypothesis".into()))
    }
}

/// A Show-and-Tell captioner: the encoder network and the decoder.
#[derive(Debug, Clone)]
pub struct ShowAndTell<E: Elem> {
    /// Image -> feature `(N, embed)`: the trunk, `linear`, `bn`. Its layers are the
    /// taps (the encoder's module paths); the default is the trunk's last rectified
    /// map (`resnet.7` for a ResNet).
    pub encoder: Network<E>,
    /// Feature and tokens -> word log-probabilities.
    pub decoder: Decoder<E>,
    /// The encoder's trunk.
    pub trunk: Trunk,
}

/// The trunk prefixes an encoder file may use.
const TRUNK_PREFIXES: [&str; 2] = ["resnet", "cnn"];

fn trunk_prefix(map: &WeightMap) -> Result<&'static str> {
    TRUNK_PREFIXES
        .into_iter()
        .find(|p| map.get(&format!("{p}.0.weight")).is_some())
        .ok_or_else(|| {
            Error::Weights(
                "no image trunk: expected `resnet.0.weight` (a torchvision ResNet as an nn.Sequential) or `cnn.0.weight`".into(),
            )
        })
}

/// Builds an encoder: the trunk under `prefix`, `flatten`, `linear`, `bn`.
fn build_encoder<E: Elem>(
    src: &mut dyn ParamSource<E>,
    trunk: &Trunk,
    prefix: &str,
    embed: usize,
) -> Result<Network<E>> {
    let mut b = NetworkBuilder::new([3, 224, 224]);
    let mut p = Params { src, b: &mut b };
    let f = trunk.build(&mut p, prefix)?;
    p.b.flatten("flatten")?;
    p.linear("linear", embed, f)?;
    p.bn("bn", embed, TORCH_BN_EPS)?;
    b.build()
}

impl<E: Elem> ShowAndTell<E> {
    /// Loads the encoder and decoder checkpoints (safetensors or `.pth`).
    pub fn load(encoder: &Path, decoder: &Path) -> Result<Self> {
        let named = |p: &Path, e: Error| match e {
            Error::Weights(m) => Error::Weights(format!("{}: {m}", p.display())),
            o => o,
        };
        let enc = WeightMap::load(encoder)?;
        let dec = WeightMap::load(decoder)?;
        Self::from_weights(enc, dec).map_err(|e| match &e {
            Error::Weights(m) if m.starts_with("decoder") => named(decoder, e),
            Error::Weights(_) => named(encoder, e),
            _ => e,
        })
    }

    /// From the two state dicts, strictly (every tensor used, shapes checked, the
    /// encoder's feature size equal to the decoder's embedding size).
    pub fn from_weights(enc: WeightMap, dec: WeightMap) -> Result<Self> {
        let prefix = trunk_prefix(&enc)?;
        let trunk = Trunk::recognise(&enc, prefix)?;
        let lin = shape_of(&enc, "linear.weight", "the encoder's projection")?;
        let [embed, feat] = lin[..] else {
            return Err(Error::Weights(format!("`linear.weight` has shape {lin:?}")));
        };
        if feat != trunk.features() {
            return Err(Error::Weights(format!(
                "the encoder's `linear.weight` {lin:?} takes {feat} features, its {} trunk gives {}",
                trunk.name(),
                trunk.features()
            )));
        }
        let spec = Decoder::<E>::spec(&dec).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("decoder: {m}")),
            o => o,
        })?;
        if spec.embed != embed {
            let e_shape = dec.get("embed.weight").map(|t| t.shape.clone());
            return Err(Error::Weights(format!(
                "decoder: the encoder gives features of {embed} (`linear.weight` {lin:?}) but the decoder embeds words in {} (`embed.weight` {:?})",
                spec.embed,
                e_shape.unwrap_or_default()
            )));
        }
        let mut src = StrictWeights::new(enc);
        let encoder = build_encoder(&mut src, &trunk, prefix, embed)?;
        ParamSource::<E>::finish(&mut src)?;
        let mut dsrc = StrictWeights::new(dec);
        let decoder = Decoder::build(&mut dsrc, spec).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("decoder: {m}")),
            o => o,
        })?;
        ParamSource::<E>::finish(&mut dsrc).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("decoder: {m}")),
            o => o,
        })?;
        Ok(ShowAndTell {
            encoder,
            decoder,
            trunk,
        })
    }

    /// Deterministic pseudo-random weights (see [`Synthetic`]), keyed by the same
    /// names as the checkpoints, with a ResNet trunk under `resnet.` or a convolution
    /// stack under `cnn.`: `tools/reference/synthetic.py` reproduces them.
    pub fn synthetic(seed: u64, trunk: Trunk, spec: DecoderSpec) -> Result<Self> {
        let prefix = match trunk {
            Trunk::Resnet { .. } => "resnet",
            Trunk::Convs(_) => "cnn",
        };
        let mut src = Synthetic::new(seed, 0);
        let encoder = build_encoder(&mut src, &trunk, prefix, spec.embed)?;
        let decoder = Decoder::build(&mut src, spec)?;
        Ok(ShowAndTell {
            encoder,
            decoder,
            trunk,
        })
    }

    /// Checks that `vocab` fits the decoder.
    pub fn check_vocab(&self, vocab: &Vocab) -> Result<()> {
        self.decoder.check_vocab(vocab)?;
        for t in ["<start>", "<end>", "<unk>"] {
            vocab.special(t)?;
        }
        Ok(())
    }

    /// The captioner conditioned on `captions` (token ids, each `<start> ... <end>`,
    /// one per batch item): a [`Model`](attrib_core::Model) whose scores are the
    /// per-token log-probabilities.
    pub fn conditioned(
        &self,
        captions: &[Vec<usize>],
    ) -> Result<WithHead<'_, E, Cpu, CaptionHead<'_, E>>> {
        Ok(WithHead::new(
            &self.encoder,
            CaptionHead::new(&self.decoder, captions)?,
        ))
    }

    /// The encoder's features `(N, embed)`, row-major.
    pub fn features(&self, images: ArrayView4<E>) -> Result<Vec<E>> {
        use attrib_core::Model;
        Ok(self.encoder.forward(images)?.into_iter().collect())
    }

    /// Greedy decoding from this model's image feature: see [`Decoder::greedy`].
    pub fn greedy(&self, feature: &[E], max_len: usize) -> Result<Vec<usize>> {
        self.decoder.greedy(feature, max_len)
    }

    /// Beam search from this model's image feature: see [`Decoder::beam_search`].
    pub fn beam_search(
        &self,
        feature: &[E],
        beam: usize,
        max_len: usize,
        start: usize,
        end: usize,
    ) -> Result<(Vec<usize>, f64)> {
        self.decoder.beam_search(feature, beam, max_len, start, end)
    }
}

fn argmax<E: Elem>(v: &[E]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The decoder as a [`Head`] conditioned on one caption per item: scores are the
/// log-probabilities of each caption's tokens after `<start>`.
#[derive(Debug, Clone)]
pub struct CaptionHead<'a, E: Elem> {
    decoder: &'a Decoder<E>,
    /// Per item, `<start> ... <end>`.
    captions: Vec<Vec<usize>>,
    steps: usize,
}

impl<'a, E: Elem> CaptionHead<'a, E> {
    /// Checks the captions (at least `<start>` and `<end>`, tokens in the vocabulary).
    pub fn new(decoder: &'a Decoder<E>, captions: &[Vec<usize>]) -> Result<Self> {
        if captions.is_empty() {
            return Err(Error::EmptyBatch);
        }
        for (i, c) in captions.iter().enumerate() {
            if c.len() < 2 {
                return Err(Error::param(
                    "caption",
                    format!(
                        "item {i} has {} tokens; a caption is <start>, its words, <end>",
                        c.len()
                    ),
                ));
            }
            if let Some(&bad) = c.iter().find(|&&t| t >= decoder.vocab) {
                return Err(Error::param(
                    "caption",
                    format!(
                        "token {bad} of item {i} is beyond the {} words",
                        decoder.vocab
                    ),
                ));
            }
        }
        let steps = captions.iter().map(Vec::len).max().unwrap_or(0);
        Ok(CaptionHead {
            decoder,
            captions: captions.to_vec(),
            steps,
        })
    }
}

impl<E: Elem, D: KernelDevice<E>> Head<E, D> for CaptionHead<'_, E> {
    fn num_outputs(&self, _: usize) -> usize {
        self.steps - 1
    }

    fn scores<T: Tape<E, D>>(
        &self,
        x: &Tensor4<E, D>,
        _: Rectifier,
        tape: &mut T,
    ) -> Result<Tensor4<E, D>> {
        let d = self.decoder;
        let [n, e, ..] = ops::dims(x);
        if n != self.captions.len() {
            return Err(Error::shape(
                "captions",
                format!("{n} (one per batch item)"),
                self.captions.len(),
            ));
        }
        if e != d.embed_dim {
            return Err(Error::shape("encoder features", d.embed_dim, e));
        }
        let l = self.steps;
        // Inputs: the feature, then tokens 0..l-1 (padded with token 0, masked below).
        let tok = |c: &Vec<usize>, s: usize| c.get(s).copied().unwrap_or(0);
        let inputs: Vec<usize> = self
            .captions
            .iter()
            .flat_map(|c| (0..l - 1).map(move |s| tok(c, s)))
            .collect();
        let targets: Vec<usize> = self
            .captions
            .iter()
            .flat_map(|c| (1..l).map(move |s| tok(c, s)))
            .collect();
        let valid: Vec<bool> = self
            .captions
            .iter()
            .flat_map(|c| (1..l).map(move |s| s < c.len()))
            .collect();
        let feat = seq::reshape_op(x, [n, 1, e, 1], tape)?;
        let seq_in = if l > 1 {
            let emb = seq::embedding(x.device(), &d.embed, e, &inputs, n)?;
            seq::concat_op(&feat, &emb, tape)?
        } else {
            feat
        };
        let h = seq::lstm_op(&seq_in, &d.lstm, tape)?.output;
        let h = seq::narrow_op(&h, 1, l - 1, tape)?;
        let logits = seq::seq_linear_op(
            &h,
            &d.out_w,
            [d.vocab, d.lstm.hidden_size()],
            Some(&d.out_b),
            tape,
        )?;
        let lp = seq::log_softmax_op(&logits, tape)?;
        let picked = seq::pick_op(&lp, &targets, tape)?;
        seq::mask_op(&picked, &valid, tape)
    }

    fn select(&self, items: &[usize]) -> Result<Self> {
        let captions = items
            .iter()
            .map(|&i| {
                self.captions.get(i).cloned().ok_or_else(|| {
                    Error::param(
                        "item",
                        format!("{i} is beyond the {} captions", self.captions.len()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The selection keeps the batch's outputs (steps past a caption's end are
        // NaN), so a target or seed of the batch fits any selection of its items.
        let mut head = CaptionHead::new(self.decoder, &captions)?;
        head.steps = self.steps;
        Ok(head)
    }

    fn has_rectifiers(&self) -> bool {
        false
    }
}
