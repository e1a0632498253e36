//! The "deeper LSTM Q + norm I" VQA baseline of Antol, Agrawal et al., as the
//! reference module of `tools/reference/vqa.py` defines it (state-dict names in
//! parentheses):
//!
//! - image: the trunk's pooled features (`cnn`), L2-normalised, then a linear layer
//!   and `tanh` (`img_fc`);
//! - question: word embeddings and `tanh` (`embed`), a 2-layer LSTM (`lstm`), the
//!   concatenation of its final hidden and cell states (`h_n[0], h_n[1], ..., c_n[0],
//!   c_n[1], ...`) through a linear layer and `tanh` (`q_fc`);
//! - their point-wise product, then a linear layer, `tanh` and a linear layer to the
//!   answer scores (before softmax) (`fc1`, `fc2`).
//!
//! The question does not depend on the image: conditioned on it, the model is an
//! image-in, answer-scores-out [`Model`](attrib_core::Model) whose question vector is
//! a constant of the pass.

use std::path::Path;

use attrib_core::{Error, Rectifier, Result};
use dfdx::tensor::Tape;

use super::params::{Dense, Params};
use super::show_and_tell::{lstm_sizes, shape_of, take_lstm};
use super::trunks::Trunk;
use crate::graph::{Head, WithHead};
use crate::kernels;
use crate::ops::sequence::{self as seq, Lstm};
use crate::ops::{self, tensor4, Tensor4};
use crate::weights::{ParamKind, ParamSource, StrictWeights, Synthetic, WeightMap};
use crate::{Cpu, Elem, KernelDevice, Network, NetworkBuilder};

/// `F.normalize`'s default `eps`.
const NORMALIZE_EPS: f64 = 1e-12;

/// The sizes of a VQA model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VqaSpec {
    /// Question vocabulary size.
    pub vocab: usize,
    /// Word embedding size.
    pub embed: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// LSTM layers.
    pub layers: usize,
    /// Size of the common image/question space.
    pub common: usize,
    /// Hidden units of the answer classifier.
    pub mlp: usize,
    /// Number of answers.
    pub answers: usize,
}

/// A VQA model: the image network and the question and fusion layers.
#[derive(Debug, Clone)]
pub struct Vqa<E: Elem> {
    /// Image -> pooled trunk features; its layers are the taps (`cnn.*`).
    pub cnn: Network<E>,
    /// The trunk.
    pub trunk: Trunk,
    /// The sizes.
    pub spec: VqaSpec,
    img_fc: Dense<E>,
    embed: Vec<E>,
    lstm: Lstm<E>,
    q_fc: Dense<E>,
    fc1: Dense<E>,
    fc2: Dense<E>,
}

impl<E: Elem> Vqa<E> {
    /// Loads a checkpoint (safetensors or `.pth`).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_weights(WeightMap::load(path)?).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("{}: {m}", path.display())),
            o => o,
        })
    }

    /// From a state dict, strictly.
    pub fn from_weights(map: WeightMap) -> Result<Self> {
        let trunk = Trunk::recognise(&map, "cnn")?;
        let e = shape_of(&map, "embed.weight", "the question's word embeddings")?;
        let [vocab, embed] = e[..] else {
            return Err(Error::Weights(format!("`embed.weight` has shape {e:?}")));
        };
        let (input, hidden, layers) = lstm_sizes(&map, "lstm")?;
        if input != embed {
            return Err(Error::Weights(format!(
                "the LSTM takes inputs of {input} but the embeddings are {embed} wide (`embed.weight` {e:?})"
            )));
        }
        let img = shape_of(&map, "img_fc.weight", "the image projection")?;
        let fc1 = shape_of(&map, "fc1.weight", "the classifier's hidden layer")?;
        let fc2 = shape_of(&map, "fc2.weight", "the answer layer")?;
        let spec = VqaSpec {
            vocab,
            embed,
            hidden,
            layers,
            common: img[0],
            mlp: fc1[0],
            answers: fc2[0],
        };
        let mut src = StrictWeights::new(map);
        let model = Self::build(&mut src, trunk, spec)?;
        ParamSource::<E>::finish(&mut src)?;
        Ok(model)
    }

    /// Deterministic pseudo-random weights ([`Synthetic`]), as
    /// `tools/reference/synthetic.py` reproduces them.
    pub fn synthetic(seed: u64, trunk: Trunk, spec: VqaSpec) -> Result<Self> {
        Self::build(&mut Synthetic::new(seed, 0), trunk, spec)
    }

    fn build(src: &mut dyn ParamSource<E>, trunk: Trunk, s: VqaSpec) -> Result<Self> {
        let mut b = NetworkBuilder::new([3, 64, 64]);
        let features = {
            let mut p = Params {
                src: &mut *src,
                b: &mut b,
            };
            let f = trunk.build(&mut p, "cnn")?;
            p.b.flatten("flatten")?;
            f
        };
        let cnn = b.build()?;
        let img_fc = Dense::take(src, "img_fc", s.common, features)?;
        let embed = src.take("embed.weight", &[s.vocab, s.embed], ParamKind::Weight)?;
        let lstm = take_lstm(src, "lstm", s.embed, s.hidden, s.layers)?;
        let q_fc = Dense::take(src, "q_fc", s.common, 2 * s.layers * s.hidden)?;
        let fc1 = Dense::take(src, "fc1", s.mlp, s.common)?;
        let fc2 = Dense::take(src, "fc2", s.answers, s.mlp)?;
        Ok(Vqa {
            cnn,
            trunk,
            spec: s,
            img_fc,
            embed,
            lstm,
            q_fc,
            fc1,
            fc2,
        })
    }

    /// The question's vector in the common space, `tanh(q_fc([h_n; c_n]))`, from its
    /// token ids (host computation: it does not depend on the image).
    pub fn question_vector(&self, tokens: &[usize]) -> Result<Vec<E>> {
        let (e, v) = (self.spec.embed, self.spec.vocab);
        if tokens.is_empty() {
            return Err(Error::param("question", "is empty"));
        }
        let mut x = Vec::with_capacity(tokens.len() * e);
        for &t in tokens {
            if t >= v {
                return Err(Error::param(
                    "question token",
                    format!("{t} is beyond the {v} words"),
                ));
            }
            x.extend(self.embed[t * e..(t + 1) * e].iter().map(|w| w.tanh()));
        }
        let (_, h_n, c_n, _) = kernels::lstm_forward(&self.lstm.layers, 1, tokens.len(), &x);
        let state: Vec<E> = h_n.into_iter().chain(c_n).collect();
        Ok(self
            .q_fc
            .host(1, &state)
            .into_iter()
            .map(|u| u.tanh())
            .collect())
    }

    /// The model conditioned on one question per batch item (token ids).
    pub fn conditioned(
        &self,
        questions: &[Vec<usize>],
    ) -> Result<WithHead<'_, E, Cpu, VqaHead<'_, E>>> {
        if questions.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let q = questions
            .iter()
            .map(|t| self.question_vector(t))
            .collect::<Result<Vec<_>>>()?
            .concat();
        Ok(WithHead::new(
            &self.cnn,
            VqaHead {
                model: self,
                q,
                n: questions.len(),
            },
        ))
    }
}

/// The image side and the classifier as a [`Head`], the questions' vectors held.
#[derive(Debug, Clone)]
pub struct VqaHead<'a, E: Elem> {
    model: &'a Vqa<E>,
    /// `(N, common)`.
    q: Vec<E>,
    n: usize,
}

impl<E: Elem, D: KernelDevice<E>> Head<E, D> for VqaHead<'_, E> {
    fn num_outputs(&self, _: usize) -> usize {
        self.model.spec.answers
    }

    fn scores<T: Tape<E, D>>(
        &self,
        x: &Tensor4<E, D>,
        _: Rectifier,
        tape: &mut T,
    ) -> Result<Tensor4<E, D>> {
        let m = self.model;
        let n = ops::dims(x)[0];
        if n != self.n {
            return Err(Error::shape(
                "questions",
                format!("{n} (one per batch item)"),
                self.n,
            ));
        }
        let v = seq::l2_normalize_op(x, NORMALIZE_EPS, tape)?;
        let v = ops::linear_op(
            &v,
            &m.img_fc.w,
            m.img_fc.shape,
            Some(&m.img_fc.b),
            None,
            tape,
        )?;
        let v = seq::tanh_op(&v, tape)?;
        let q = tensor4(x.device(), self.q.clone(), [n, m.spec.common, 1, 1])?;
        let f = seq::mul_op(&v, &q, tape)?;
        let f = ops::linear_op(&f, &m.fc1.w, m.fc1.shape, Some(&m.fc1.b), None, tape)?;
        let f = seq::tanh_op(&f, tape)?;
        ops::linear_op(&f, &m.fc2.w, m.fc2.shape, Some(&m.fc2.b), None, tape)
    }

    fn select(&self, items: &[usize]) -> Result<Self> {
        let c = self.model.spec.common;
        let mut q = Vec::with_capacity(items.len() * c);
        for &i in items {
            if i >= self.n {
                return Err(Error::param(
                    "item",
                    format!("{i} is beyond the {} questions", self.n),
                ));
            }
            q.extend_from_slice(&self.q[i * c..(i + 1) * c]);
        }
        Ok(VqaHead {
            model: self.model,
            q,
            n: items.len(),
        })
    }

    fn has_rectifiers(&self) -> bool {
        false
    }
}
