//! Heads: the part of a model above a network's output, written as code over the tape
//! ops (a caption decoder, a VQA fusion and classifier), and the model a network and a
//! head make together.
//!
//! A head turns the network's output `(N, C, 1, 1)` into the model's scores
//! `(N, K, 1, 1)` on the same tape, so one backward pass runs from a seed on the
//! head's scores through the head into the network, with the network's taps,
//! rectifier rules and input gradient exactly as for a classifier. A head conditioned
//! on a query (a caption's tokens, a question) holds it: the pair is still an
//! image-in, scores-out [`Model`], and every method applies unchanged.

use attrib_core::{
    BackwardOutput, BackwardRequest, LayerInfo, LayerTap, LinearHead, Model, Rectifier, Result,
};
use dfdx::tensor::Tape;
use ndarray::{Array2, Array4, ArrayView4};

use super::network::Network;
use crate::ops::Tensor4;
use crate::{Elem, KernelDevice};

/// The computation above a network's output.
pub trait Head<E: Elem, D: KernelDevice<E>>: Sync {
    /// The number of scores per item, above a network with `inputs` outputs.
    fn num_outputs(&self, inputs: usize) -> usize;

    /// The scores `(N, K, 1, 1)` from the network's output `x`, recording the backward
    /// of every op on `tape` (a `NoneTape` records nothing). A rectifier in the head
    /// back-propagates by `rule`, the pass's rule, as the network's do.
    fn scores<T: Tape<E, D>>(
        &self,
        x: &Tensor4<E, D>,
        rule: Rectifier,
        tape: &mut T,
    ) -> Result<Tensor4<E, D>>;

    /// The head for a batch whose row `j` stands for item `items[j]` of this one (see
    /// [`Model::forward_items`]): a head conditioned on per-item queries selects
    /// them; others are unchanged.
    fn select(&self, items: &[usize]) -> Result<Self>
    where
        Self: Sized;

    /// Whether a rectifier lies in the head (then the rectifier rule of a pass changes
    /// the gradient reaching the network). `true`, the default, is always correct.
    fn has_rectifiers(&self) -> bool {
        true
    }
}

/// The network's own output as the scores: a plain classifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<E: Elem, D: KernelDevice<E>> Head<E, D> for Identity {
    fn num_outputs(&self, inputs: usize) -> usize {
        inputs
    }

    fn scores<T: Tape<E, D>>(
        &self,
        x: &Tensor4<E, D>,
        _: Rectifier,
        _: &mut T,
    ) -> Result<Tensor4<E, D>> {
        Ok(x.clone())
    }

    fn select(&self, _: &[usize]) -> Result<Self> {
        Ok(Identity)
    }

    fn has_rectifiers(&self) -> bool {
        false
    }
}

/// What runs a network's passes followed by a head: what a head sits on. The
/// [`Network`] itself on its device; on a GPU, `gpu::GpuNetwork`, which runs the
/// network there and a CPU head ([`Head<E, Cpu>`](Head)) on the host.
pub trait Executor<E: Elem, D: KernelDevice<E>> {
    /// The network (its layers, shapes and names).
    fn network(&self) -> &Network<E, D>;

    /// Scores `(N, K)` of the network followed by `head`.
    fn forward_with<H: Head<E, D>>(&self, input: ArrayView4<E>, head: &H) -> Result<Array2<E>>;

    /// One backward pass of the network followed by `head`.
    fn backward_with<H: Head<E, D>>(
        &self,
        req: &BackwardRequest<'_, E>,
        head: &H,
    ) -> Result<BackwardOutput<E>>;

    /// The head's scores and the activations of `layers`, from one forward pass.
    fn activations_with<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<E>, Vec<Array4<E>>)>;

    /// The head's scores with `activations` in place of `layer`'s output (see
    /// [`LayerTap::forward_from`]).
    fn forward_from_with<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layer: &str,
        activations: ArrayView4<E>,
        items: &[usize],
        head: &H,
    ) -> Result<Array2<E>>;
}

impl<E: Elem, D: KernelDevice<E>> Executor<E, D> for Network<E, D> {
    fn network(&self) -> &Network<E, D> {
        self
    }

    fn forward_with<H: Head<E, D>>(&self, input: ArrayView4<E>, head: &H) -> Result<Array2<E>> {
        Network::forward_with(self, input, head)
    }

    fn backward_with<H: Head<E, D>>(
        &self,
        req: &BackwardRequest<'_, E>,
        head: &H,
    ) -> Result<BackwardOutput<E>> {
        Network::backward_with(self, req, head)
    }

    fn activations_with<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<E>, Vec<Array4<E>>)> {
        Network::activations_with(self, input, layers, head)
    }

    fn forward_from_with<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layer: &str,
        activations: ArrayView4<E>,
        items: &[usize],
        head: &H,
    ) -> Result<Array2<E>> {
        Network::forward_from_with(self, input, layer, activations, items, head)
    }
}

/// A network (any [`Executor`]: on the CPU or a GPU) and a head as one [`Model`] and
/// [`LayerTap`]: the network's layers are the taps, the head's scores the outputs.
#[derive(Debug, Clone)]
pub struct WithHead<'a, E: Elem, D: KernelDevice<E>, H, N = Network<E, D>> {
    /// The image network.
    pub net: &'a N,
    /// What turns its output into scores.
    pub head: H,
    device: std::marker::PhantomData<fn() -> (E, D)>,
}

impl<'a, E: Elem, D: KernelDevice<E>, H: Head<E, D>, N: Executor<E, D>> WithHead<'a, E, D, H, N> {
    /// `net` followed by `head`.
    pub fn new(net: &'a N, head: H) -> Self {
        WithHead {
            net,
            head,
            device: std::marker::PhantomData,
        }
    }

    /// The same head on another trunk (the same network placed on a GPU, say).
    pub fn on<M: Executor<E, D>>(self, net: &M) -> WithHead<'_, E, D, H, M> {
        WithHead::new(net, self.head)
    }
}

impl<E, D, H, N> Model<E> for WithHead<'_, E, D, H, N>
where
    E: Elem,
    D: KernelDevice<E>,
    H: Head<E, D>,
    N: Executor<E, D>,
{
    fn input_shape(&self) -> [usize; 3] {
        self.net.network().input_shape()
    }

    fn num_outputs(&self) -> usize {
        self.head.num_outputs(self.net.network().num_outputs())
    }

    fn forward(&self, input: ArrayView4<E>) -> Result<Array2<E>> {
        self.net.forward_with(input, &self.head)
    }

    fn backward(&self, req: &BackwardRequest<'_, E>) -> Result<BackwardOutput<E>> {
        self.net.backward_with(req, &self.head)
    }

    fn backward_items(
        &self,
        req: &BackwardRequest<'_, E>,
        items: &[usize],
    ) -> Result<BackwardOutput<E>> {
        if items.len() != req.input.dim().0 {
            return Err(attrib_core::Error::shape(
                "items of the rows",
                req.input.dim().0,
                items.len(),
            ));
        }
        self.net.backward_with(req, &self.head.select(items)?)
    }

    fn forward_items(&self, input: ArrayView4<E>, items: &[usize]) -> Result<Array2<E>> {
        if items.len() != input.dim().0 {
            return Err(attrib_core::Error::shape(
                "items of the rows",
                input.dim().0,
                items.len(),
            ));
        }
        self.net.forward_with(input, &self.head.select(items)?)
    }
}

impl<E, D, H, N> LayerTap<E> for WithHead<'_, E, D, H, N>
where
    E: Elem,
    D: KernelDevice<E>,
    H: Head<E, D>,
    N: Executor<E, D>,
{
    fn layers(&self) -> Vec<LayerInfo> {
        self.net.network().layers()
    }

    fn default_layer(&self) -> String {
        self.net.network().default_layer()
    }

    fn activations(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
    ) -> Result<(Array2<E>, Vec<Array4<E>>)> {
        self.net.activations_with(input, layers, &self.head)
    }

    fn activations_items(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
        items: &[usize],
    ) -> Result<(Array2<E>, Vec<Array4<E>>)> {
        if items.len() != input.dim().0 {
            return Err(attrib_core::Error::shape(
                "items of the rows",
                input.dim().0,
                items.len(),
            ));
        }
        self.net
            .activations_with(input, layers, &self.head.select(items)?)
    }

    /// No GAP + linear head: the scores are the head's, not a linear function of a
    /// pooled map (CAM says so).
    fn linear_head(&self) -> Option<LinearHead<E>> {
        None
    }

    fn forward_from(
        &self,
        input: ArrayView4<E>,
        layer: &str,
        activations: ArrayView4<E>,
        items: &[usize],
    ) -> Result<Array2<E>> {
        self.net
            .forward_from_with(input, layer, activations, items, &self.head.select(items)?)
    }

    fn rectifiers_above(&self, layer: &str) -> Result<bool> {
        Ok(self.net.network().rectifiers_above(layer)? || self.head.has_rectifiers())
    }
}
