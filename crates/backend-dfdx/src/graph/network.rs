//! Networks as a flat graph of named nodes, and the executor that turns one
//! [`BackwardRequest`] into one forward and one backward pass on dfdx's tape.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use attrib_core::{
    check_input, BackwardOutput, BackwardRequest, Error, LayerInfo, LayerTap, LinearHead, Model,
    Rectifier, RectifierKind, Result, TapOutput,
};
use dfdx::tensor::{Cpu, NoneTape, OwnedTape, PutTape, Tape};
use ndarray::{Array2, Array4, ArrayView4};

use super::head::{Head, Identity};
use super::layers::{BatchNorm2d, Conv2d, Layer, Linear};
use crate::ops::{self, backend, tensor4, Pool2dConfig, Tensor4};
use crate::{Elem, KernelDevice};

/// A handle on a value in a network under construction, for residual connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueId(usize);

#[derive(Debug, Clone)]
pub(crate) struct Node<E> {
    pub(crate) layer: Layer<E>,
    pub(crate) inputs: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Name {
    name: String,
    value: usize,
    kind: &'static str,
}

/// Assembles a [`Network`] layer by layer. Names are tap names; [`scope`]s prefix
/// them (`layer1.0.conv1`) and name their output (`layer1.0`), as PyTorch module
/// paths do. Shapes are checked as layers are added, for the nominal input.
///
/// [`scope`]: NetworkBuilder::scope
#[derive(Debug, Clone)]
pub struct NetworkBuilder<E> {
    input_shape: [usize; 3],
    nodes: Vec<Node<E>>,
    shapes: Vec<[usize; 3]>,
    names: Vec<Name>,
    current: usize,
    prefix: Vec<String>,
    default_layer: Option<String>,
    map_output: bool,
}

impl<E: Elem> NetworkBuilder<E> {
    /// A builder for inputs of shape `(C, H, W)`.
    pub fn new(input_shape: [usize; 3]) -> Self {
        NetworkBuilder {
            input_shape,
            nodes: Vec::new(),
            shapes: vec![input_shape],
            names: Vec::new(),
            current: 0,
            prefix: Vec::new(),
            default_layer: None,
            map_output: false,
        }
    }

    /// The full tap name `name` gets in the current scope (`layer1.0.conv1`), which is
    /// also its PyTorch module path.
    pub fn path(&self, name: &str) -> String {
        self.full_name(name)
    }

    fn full_name(&self, name: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(name.to_string());
        parts.join(".")
    }

    fn register(&mut self, name: String, value: usize, kind: &'static str) -> Result<()> {
        if name.is_empty() || self.names.iter().any(|n| n.name == name) {
            return Err(Error::param(
                "layer name",
                format!("`{name}` is empty or already used"),
            ));
        }
        self.names.push(Name { name, value, kind });
        Ok(())
    }

    /// Adds a node computing `layer` on `inputs` (value ids) and makes it current.
    fn push(&mut self, name: &str, layer: Layer<E>, inputs: Vec<usize>) -> Result<&mut Self> {
        let full = self.full_name(name);
        let in_shapes: Vec<[usize; 3]> = inputs.iter().map(|&v| self.shapes[v]).collect();
        let shape = layer.out_shape(&in_shapes).map_err(|e| match e {
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => Error::ShapeMismatch {
                what: format!("layer `{full}`: {what}"),
                expected,
                got,
            },
            Error::InvalidParameter { name, reason } => Error::InvalidParameter {
                name: format!("layer `{full}`: {name}"),
                reason,
            },
            other => other,
        })?;
        let kind = layer.kind();
        self.register(full, self.shapes.len(), kind)?;
        self.nodes.push(Node { layer, inputs });
        self.shapes.push(shape);
        self.current = self.shapes.len() - 1;
        Ok(self)
    }

    /// Adds `layer` on the current value.
    pub fn layer(&mut self, name: &str, layer: Layer<E>) -> Result<&mut Self> {
        if layer.arity() != 1 {
            return Err(Error::param(
                "layer",
                format!("`{name}` takes two inputs: use `add`"),
            ));
        }
        self.push(name, layer, vec![self.current])
    }

    /// A convolution.
    pub fn conv2d(&mut self, name: &str, conv: Conv2d<E>) -> Result<&mut Self> {
        self.layer(name, Layer::Conv2d(conv))
    }

    /// Inference batch norm.
    pub fn batch_norm(&mut self, name: &str, bn: BatchNorm2d<E>) -> Result<&mut Self> {
        self.layer(name, Layer::BatchNorm2d(bn))
    }

    /// ReLU.
    pub fn relu(&mut self, name: &str) -> Result<&mut Self> {
        self.layer(name, Layer::Rectifier(RectifierKind::Relu))
    }

    /// ReLU6.
    pub fn relu6(&mut self, name: &str) -> Result<&mut Self> {
        self.layer(name, Layer::Rectifier(RectifierKind::Relu6))
    }

    /// Max pool.
    pub fn max_pool(&mut self, name: &str, cfg: Pool2dConfig) -> Result<&mut Self> {
        self.layer(name, Layer::MaxPool2d(cfg))
    }

    /// Average pool (`count_include_pad` as PyTorch's default, true).
    pub fn avg_pool(&mut self, name: &str, cfg: Pool2dConfig) -> Result<&mut Self> {
        self.layer(
            name,
            Layer::AvgPool2d {
                cfg,
                count_include_pad: true,
            },
        )
    }

    /// Adaptive average pool to `(ho, wo)`.
    pub fn adaptive_avg_pool(&mut self, name: &str, out_hw: [usize; 2]) -> Result<&mut Self> {
        self.layer(name, Layer::AdaptiveAvgPool2d(out_hw))
    }

    /// Global average pool.
    pub fn global_avg_pool(&mut self, name: &str) -> Result<&mut Self> {
        self.adaptive_avg_pool(name, [1, 1])
    }

    /// Flatten to `(N, C*H*W, 1, 1)`.
    pub fn flatten(&mut self, name: &str) -> Result<&mut Self> {
        self.layer(name, Layer::Flatten)
    }

    /// Fully connected layer.
    pub fn linear(&mut self, name: &str, linear: Linear<E>) -> Result<&mut Self> {
        self.layer(name, Layer::Linear(linear))
    }

    /// Dropout: the identity at inference. The name taps the same value.
    pub fn dropout(&mut self, name: &str) -> Result<&mut Self> {
        let full = self.full_name(name);
        self.register(full, self.current, "dropout")?;
        Ok(self)
    }

    /// Gives the current value one more tap name (e.g. the block it ends).
    pub fn alias(&mut self, name: &str) -> Result<&mut Self> {
        let full = self.full_name(name);
        let kind = self
            .names
            .iter()
            .rev()
            .find(|n| n.value == self.current)
            .map_or("input", |n| n.kind);
        self.register(full, self.current, kind)?;
        Ok(self)
    }

    /// `current + other`: the residual connection.
    pub fn add(&mut self, name: &str, other: ValueId) -> Result<&mut Self> {
        self.push(name, Layer::Add, vec![self.current, other.0])
    }

    /// The shape `(C, H, W)` of the current value for the nominal input.
    pub fn current_shape(&self) -> [usize; 3] {
        self.shapes[self.current]
    }

    /// The current value, to come back to for a residual branch.
    pub fn current(&self) -> ValueId {
        ValueId(self.current)
    }

    /// Continues from `value` (to build a shortcut branch, for example).
    pub fn set_current(&mut self, value: ValueId) -> &mut Self {
        self.current = value.0;
        self
    }

    /// Builds the layers added by `f` under the name prefix `name.`, then names the
    /// resulting value `name` (a PyTorch submodule's output).
    pub fn scope(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<&mut Self> {
        self.prefix.push(name.to_string());
        let r = f(self);
        self.prefix.pop();
        r?;
        self.alias(name)
    }

    /// Sets the layer Grad-CAM uses by default (otherwise: the last rectified map
    /// before the head).
    pub fn default_layer(&mut self, name: &str) -> &mut Self {
        self.default_layer = Some(name.to_string());
        self
    }

    /// Lets the network end in a feature map `(C, H, W)` rather than scores: a
    /// detector's trunk, read with [`Network::output_map`] or under a head that
    /// reduces it (such a network alone is not a classifier).
    pub fn ends_in_map(&mut self) -> &mut Self {
        self.map_output = true;
        self
    }

    /// Builds on the CPU.
    pub fn build(self) -> Result<Network<E, Cpu>> {
        self.build_on(Cpu::default())
    }

    /// Builds on `device`.
    pub fn build_on<D: KernelDevice<E>>(self, device: D) -> Result<Network<E, D>> {
        let out = *self
            .shapes
            .last()
            .expect("the input shape is always present");
        if self.nodes.is_empty() || (!self.map_output && (out[1] != 1 || out[2] != 1)) {
            return Err(Error::shape(
                "network output",
                "(K, 1, 1): end with a linear layer or a global pool",
                format!("{out:?}"),
            ));
        }
        if self.current != self.shapes.len() - 1 {
            return Err(Error::param(
                "network",
                "the last added layer must be the output",
            ));
        }
        let head = self
            .nodes
            .iter()
            .position(|n| {
                matches!(
                    n.layer,
                    Layer::Flatten | Layer::Linear(_) | Layer::AdaptiveAvgPool2d([1, 1])
                )
            })
            .unwrap_or(self.nodes.len());
        let default_value = (0..head)
            .rev()
            .find(|&i| matches!(self.nodes[i].layer, Layer::Rectifier(_)))
            .or(head.checked_sub(1))
            .map(|i| i + 1)
            .unwrap_or(self.shapes.len() - 1);
        let default_layer = match self.default_layer {
            Some(name) => {
                if !self.names.iter().any(|n| n.name == name) {
                    return Err(Error::UnknownLayer {
                        name,
                        valid: self.names.iter().map(|n| n.name.clone()).collect(),
                    });
                }
                name
            }
            // The outermost name of the value: `layer4` rather than `layer4.1.relu`.
            None => self
                .names
                .iter()
                .rev()
                .find(|n| n.value == default_value)
                .map(|n| n.name.clone())
                .expect("every node has a name"),
        };
        let mut last_use = vec![0usize; self.shapes.len()];
        let mut uses = vec![0usize; self.shapes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
                uses[v] += 1;
            }
        }
        let folded = (0..self.nodes.len())
            .map(|i| {
                match (
                    &self.nodes[i].layer,
                    self.nodes.get(i + 1).map(|n| (&n.layer, &n.inputs)),
                ) {
                    (Layer::Conv2d(c), Some((Layer::BatchNorm2d(bn), inputs)))
                        if inputs == &[i + 1] && uses[i + 1] == 1 =>
                    {
                        Some(Layer::Conv2d(c.fold_batch_norm(bn)))
                    }
                    _ => None,
                }
            })
            .collect();
        let fusable = (0..self.shapes.len())
            .map(|v| match self.nodes.get(v) {
                Some(Node {
                    layer: Layer::Rectifier(kind),
                    inputs,
                }) if inputs == &[v] && uses[v] == 1 => Some(*kind),
                _ => None,
            })
            .collect();
        Ok(Network {
            device,
            input_shape: self.input_shape,
            nodes: self.nodes,
            shapes: self.shapes,
            names: self.names,
            default_layer,
            last_use,
            folded,
            fusable,
        })
    }
}

/// A network on dfdx tensors: implements [`Model`] and [`LayerTap`].
#[derive(Debug, Clone)]
pub struct Network<E: Elem, D: KernelDevice<E> = Cpu> {
    device: D,
    pub(crate) input_shape: [usize; 3],
    pub(crate) nodes: Vec<Node<E>>,
    pub(crate) shapes: Vec<[usize; 3]>,
    names: Vec<Name>,
    default_layer: String,
    last_use: Vec<usize>,
    /// For a convolution whose only consumer is a batch norm: the two folded into one
    /// convolution, used when neither output is tapped (inference needs no separate
    /// normalisation pass).
    folded: Vec<Option<Layer<E>>>,
    /// For a value consumed only by the rectifier right after it: that rectifier's
    /// kind. A convolution or residual add producing it then applies the rectifier
    /// itself ([`ops::Fused`]) when the value is not tapped.
    fusable: Vec<Option<RectifierKind>>,
}

type Capture<E> = Arc<Mutex<Option<Vec<E>>>>;

impl<E: Elem, D: KernelDevice<E>> Network<E, D> {
    /// The device the network runs on.
    pub fn device(&self) -> &D {
        &self.device
    }

    pub(crate) fn value_of(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.value)
            .ok_or_else(|| Error::UnknownLayer {
                name: name.to_string(),
                valid: self.names.iter().map(|n| n.name.clone()).collect(),
            })
    }

    fn layer_forward<T: Tape<E, D>>(
        &self,
        layer: &Layer<E>,
        ins: &[&Tensor4<E, D>],
        rule: Rectifier,
        act: Option<ops::Fused>,
        tape: &mut T,
    ) -> Result<Tensor4<E, D>> {
        let x = ins[0];
        match layer {
            Layer::Conv2d(c) => ops::conv2d_op(
                x,
                &c.weight,
                c.shape,
                c.bias.as_ref(),
                &c.cfg,
                Some(&c.winograd),
                act,
                None,
                tape,
            ),
            Layer::BatchNorm2d(bn) => ops::affine_op(x, &bn.scale, &bn.shift, tape),
            Layer::Rectifier(kind) => ops::rectify_op(x, *kind, rule, tape),
            Layer::MaxPool2d(cfg) => ops::max_pool_op(x, cfg, tape),
            Layer::AvgPool2d {
                cfg,
                count_include_pad,
            } => ops::avg_pool_op(x, cfg, *count_include_pad, tape),
            Layer::AdaptiveAvgPool2d(hw) => ops::adaptive_avg_pool_op(x, *hw, tape),
            Layer::Flatten => ops::flatten_op(x, tape),
            Layer::Linear(l) => ops::linear_op(x, &l.weight, l.shape, l.bias.as_ref(), None, tape),
            Layer::Add => ops::add_op(x, ins[1], act, tape),
        }
    }

    fn input_tensor(&self, input: &ArrayView4<E>) -> Result<Tensor4<E, D>> {
        check_input(input, self.input_shape[0])?;
        let (n, c, h, w) = input.dim();
        tensor4(&self.device, input.iter().copied().collect(), [n, c, h, w])
    }

    /// Runs the nodes: those before `record_from` untraced, the rest on `tape`. Keeps
    /// the values in `keep` (and the output), frees the others after their last use,
    /// and registers a gradient capture for every value in `capture`.
    fn run(
        &self,
        x: Tensor4<E, D>,
        rule: Rectifier,
        record_from: usize,
        tape: &mut OwnedTape<E, D>,
        keep: &HashSet<usize>,
        capture: &[(usize, Capture<E>)],
    ) -> Result<Vec<Option<Tensor4<E, D>>>> {
        let mut values: Vec<Option<Tensor4<E, D>>> = vec![None; self.shapes.len()];
        // Rows that are equal (one image under several queries: a region model's
        // regions, one image explained for several targets) share the part of the
        // pass nothing is recorded in: it runs once per distinct row, and every live
        // value is expanded to all rows where recording starts (or at the end). The
        // layers act on each row alone, so this changes no value.
        let mut shared = if record_from > 0 {
            shared_rows(&D::host(&x), ops::dims(&x))
        } else {
            None
        };
        let x = match &shared {
            Some((distinct, _)) => self.gather_rows(&x, distinct)?,
            None => x,
        };
        // A tap on the input itself: registered first, its capture runs last in the
        // backward pass, after every consumer of the input has added its share.
        Self::add_captures(0, &x, capture, tape);
        values[0] = Some(x);
        let last = self.nodes.len();
        let mut i = 0;
        while i < self.nodes.len() {
            let node = &self.nodes[i];
            let recorded = i >= record_from;
            if recorded {
                if let Some((_, of_row)) = shared.take() {
                    self.expand_rows(&mut values, &of_row)?;
                }
            }
            let captured = |v: usize| capture.iter().any(|(cv, _)| *cv == v);
            let (folded, act, v) = self.plan_step(i, rule, record_from, keep, captured);
            let out = {
                let ins: Vec<&Tensor4<E, D>> = node
                    .inputs
                    .iter()
                    .map(|&v| {
                        values[v]
                            .as_ref()
                            .expect("inputs are freed only after their last use")
                    })
                    .collect();
                let layer = folded.unwrap_or(&node.layer);
                if recorded {
                    self.layer_forward(layer, &ins, rule, act, tape)?
                } else {
                    self.layer_forward(layer, &ins, rule, act, &mut NoneTape)?
                }
            };
            values[v] = Some(out);
            // Expanded before a capture is registered on it: the capture must watch
            // the tensor the recorded nodes will read.
            if v >= record_from {
                if let Some((_, of_row)) = shared.take() {
                    self.expand_rows(&mut values, &of_row)?;
                }
            }
            // Pushed after the producer's backward op, so it runs after every
            // consumer has added its share and before the producer consumes it.
            Self::add_captures(v, values[v].as_ref().expect("just set"), capture, tape);
            self.release_inputs(i, &mut values, keep);
            i = v;
        }
        if let Some((_, of_row)) = shared {
            self.expand_rows(&mut values, &of_row)?;
        }
        debug_assert!(values[last].is_some());
        Ok(values)
    }

    /// The values `req`'s taps name, and the node recording starts at: without the
    /// input gradient, the earliest tap, so that nothing below it is recorded or run
    /// backwards (node i produces value i + 1). Both executors record from here.
    pub(crate) fn recording(&self, req: &BackwardRequest<'_, E>) -> Result<(Vec<usize>, usize)> {
        let tap_values: Vec<usize> = req
            .taps
            .iter()
            .map(|t| self.value_of(t))
            .collect::<Result<_>>()?;
        let record_from = if req.input_grad {
            0
        } else {
            tap_values.iter().copied().min().unwrap_or(usize::MAX)
        };
        Ok((tap_values, record_from))
    }

    /// Frees, after node `i` ran, the inputs it used last (never the network's input
    /// or a `keep` value): every executor (the tape here, the GPU's) frees by this rule.
    pub(crate) fn release_inputs<T>(
        &self,
        i: usize,
        values: &mut [Option<T>],
        keep: &HashSet<usize>,
    ) {
        for &u in &self.nodes[i].inputs {
            if self.last_use[u] == i && u != 0 && !keep.contains(&u) {
                values[u] = None;
            }
        }
    }

    /// Node `i` folded with the batch norm after it, if the pair can fold.
    pub(crate) fn folded_layer(&self, i: usize) -> Option<&Layer<E>> {
        self.folded[i].as_ref()
    }

    /// How node `i` runs in a pass recorded from node `record_from`: the conv + batch
    /// norm pair folded into one convolution (when the conv's output is neither kept
    /// nor where recording starts), the rectifier fused into the op (when it alone
    /// consumes the value, which is neither kept nor captured, and both sit on the
    /// same side of where recording starts), and the value the step produces. Every
    /// executor (the tape here, the GPU's) plans its steps with this one rule.
    pub(crate) fn plan_step(
        &self,
        i: usize,
        rule: Rectifier,
        record_from: usize,
        keep: &HashSet<usize>,
        captured: impl Fn(usize) -> bool,
    ) -> (Option<&Layer<E>>, Option<ops::Fused>, usize) {
        let recorded = i >= record_from;
        let folded = self.folded[i]
            .as_ref()
            .filter(|_| !keep.contains(&(i + 1)) && (i + 1 >= record_from) == recorded);
        let produced = if folded.is_some() { i + 2 } else { i + 1 };
        let act = self.fusable[produced]
            .filter(|_| {
                matches!(
                    folded.unwrap_or(&self.nodes[i].layer),
                    Layer::Conv2d(_) | Layer::Add
                ) && !keep.contains(&produced)
                    && !captured(produced)
                    && (produced >= record_from) == recorded
            })
            .map(|kind| ops::Fused { kind, rule });
        let v = if act.is_some() {
            produced + 1
        } else {
            produced
        };
        (folded, act, v)
    }

    /// The rows `rows` of `t`, in that order (untraced).
    fn gather_rows(&self, t: &Tensor4<E, D>, rows: &[usize]) -> Result<Tensor4<E, D>> {
        let [_, c, h, w] = ops::dims(t);
        let per = c * h * w;
        let host = D::host(t);
        let data = rows
            .iter()
            .flat_map(|&i| host[i * per..(i + 1) * per].iter().copied())
            .collect();
        tensor4(&self.device, data, [rows.len(), c, h, w])
    }

    /// Every computed value, from one row per distinct input row to all rows.
    fn expand_rows(&self, values: &mut [Option<Tensor4<E, D>>], of_row: &[usize]) -> Result<()> {
        for v in values.iter_mut().flatten() {
            *v = self.gather_rows(v, of_row)?;
        }
        Ok(())
    }

    /// Registers, for every capture of value `v`, a backward op that copies the
    /// gradient accumulated at `t` into the capture's cell.
    fn add_captures(
        v: usize,
        t: &Tensor4<E, D>,
        capture: &[(usize, Capture<E>)],
        tape: &mut OwnedTape<E, D>,
    ) {
        for (_, cell) in capture.iter().filter(|(cv, _)| *cv == v) {
            let g = t.ghost();
            let cell = cell.clone();
            tape.add_backward_op(move |grads| {
                let host = D::read_host(grads.get_or_alloc_mut(&g)?)?;
                *cell.lock().expect("capture lock") = Some(host);
                Ok(())
            });
        }
    }

    fn to_array4(&self, t: &Tensor4<E, D>) -> Array4<E> {
        let [n, c, h, w] = ops::dims(t);
        Array4::from_shape_vec((n, c, h, w), D::host(t).into_owned())
            .expect("tensor length matches its shape")
    }

    fn scores_of(&self, t: &Tensor4<E, D>) -> Array2<E> {
        let [n, k, ..] = ops::dims(t);
        Array2::from_shape_vec((n, k), D::host(t).into_owned()).expect("the output is (N, K, 1, 1)")
    }
}

impl<E: Elem, D: KernelDevice<E>> Model<E> for Network<E, D> {
    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn num_outputs(&self) -> usize {
        self.shapes.last().map_or(0, |s| s[0])
    }

    fn forward(&self, input: ArrayView4<E>) -> Result<Array2<E>> {
        self.forward_with(input, &Identity)
    }

    fn backward(&self, req: &BackwardRequest<'_, E>) -> Result<BackwardOutput<E>> {
        self.backward_with(req, &Identity)
    }
}

impl<E: Elem, D: KernelDevice<E>> Network<E, D> {
    /// Scores `(N, K)` of the network followed by `head`.
    pub fn forward_with<H: Head<E, D>>(&self, input: ArrayView4<E>, head: &H) -> Result<Array2<E>> {
        D::run_pass(self, |net| net.forward_pass(input, head))
    }

    /// One backward pass of the network followed by `head`: the taps are the
    /// network's, the target a seed on the head's scores.
    pub fn backward_with<H: Head<E, D>>(
        &self,
        req: &BackwardRequest<'_, E>,
        head: &H,
    ) -> Result<BackwardOutput<E>> {
        D::run_pass(self, |net| net.backward_pass(req, head))
    }

    /// The network's output as it is, `(N, C, H, W)`: for a network that ends in a
    /// feature map (a detector's trunk) rather than scores.
    pub fn output_map(&self, input: ArrayView4<E>) -> Result<Array4<E>> {
        D::run_pass(self, |net| Ok(net.to_array4(&net.forward_output(input)?)))
    }

    /// The head's scores and the activations of `layers`, from one forward pass.
    pub fn activations_with<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<E>, Vec<Array4<E>>)> {
        D::run_pass(self, |net| net.activations_pass(input, layers, head))
    }

    fn head_scores<H: Head<E, D>, T: Tape<E, D>>(
        &self,
        head: &H,
        out: &Tensor4<E, D>,
        rule: Rectifier,
        tape: &mut T,
    ) -> Result<Tensor4<E, D>> {
        let s = head.scores(out, rule, tape)?;
        let [n, k, h, w] = ops::dims(&s);
        if h != 1 || w != 1 || n != ops::dims(out)[0] {
            return Err(Error::shape(
                "head scores",
                format!("({}, K, 1, 1)", ops::dims(out)[0]),
                format!("({n}, {k}, {h}, {w})"),
            ));
        }
        Ok(s)
    }

    /// The network's output of a forward pass, nothing recorded.
    fn forward_output(&self, input: ArrayView4<E>) -> Result<Tensor4<E, D>> {
        let x = self.input_tensor(&input)?;
        let mut tape = OwnedTape::default();
        let mut values = self.run(
            x,
            Rectifier::Gradient,
            usize::MAX,
            &mut tape,
            &HashSet::new(),
            &[],
        )?;
        Ok(values.pop().flatten().expect("output kept"))
    }

    fn forward_pass<H: Head<E, D>>(&self, input: ArrayView4<E>, head: &H) -> Result<Array2<E>> {
        let out = self.forward_output(input)?;
        Ok(self.scores_of(&self.head_scores(head, &out, Rectifier::Gradient, &mut NoneTape)?))
    }

    fn backward_pass<H: Head<E, D>>(
        &self,
        req: &BackwardRequest<'_, E>,
        head: &H,
    ) -> Result<BackwardOutput<E>> {
        let x = self.input_tensor(&req.input)?;
        let (tap_values, record_from) = self.recording(req)?;
        let captures: Vec<(usize, Capture<E>)> = tap_values
            .iter()
            .map(|&v| (v, Arc::new(Mutex::new(None))))
            .collect();
        let keep: HashSet<usize> = tap_values.iter().copied().collect();
        let mut tape = OwnedTape::default();
        let values = self.run(
            x.clone(),
            req.rectifier,
            record_from,
            &mut tape,
            &keep,
            &captures,
        )?;
        let out = values.last().cloned().flatten().expect("output kept");
        let nothing_asked = !req.input_grad && tap_values.is_empty();
        let scores_t = if nothing_asked {
            self.head_scores(head, &out, req.rectifier, &mut NoneTape)?
        } else {
            self.head_scores(head, &out, req.rectifier, &mut tape)?
        };
        let scores = self.scores_of(&scores_t);
        let target = req.target.resolve(scores.view())?;
        let mut output = BackwardOutput {
            scores,
            target,
            input_grad: None,
            taps: Vec::new(),
        };
        if nothing_asked {
            return Ok(output);
        }
        let loss = ops::seed_loss(
            scores_t.put_tape(tape),
            output.target.seed.iter().copied().collect(),
        )?;
        let mut grads = D::run_backward(loss).map_err(backend)?;
        if req.input_grad {
            let g = D::read_host(grads.get_or_alloc_mut(&x).map_err(backend)?).map_err(backend)?;
            let (n, c, h, w) = req.input.dim();
            output.input_grad = Some(Array4::from_shape_vec((n, c, h, w), g).map_err(backend)?);
        }
        for ((name, &v), (_, cell)) in req.taps.iter().zip(&tap_values).zip(&captures) {
            let act = values[v].as_ref().expect("taps are kept");
            let activation = self.to_array4(act);
            // A gradient that was not computed is an error, never zeros.
            let g = cell.lock().expect("capture lock").take().ok_or_else(|| {
                Error::Backend(format!(
                    "the backward pass did not reach tap `{name}`: its gradient was not computed"
                ))
            })?;
            let gradient = Array4::from_shape_vec(activation.dim(), g).map_err(backend)?;
            output.taps.push(TapOutput {
                name: name.clone(),
                activation,
                gradient,
            });
        }
        Ok(output)
    }

    /// The head's scores with `activations` in place of `layer`'s output: the rows
    /// stand for `items` of `input`. Everything below the layer runs once, on
    /// `input`; nodes above it run on the replaced rows, reading any value from
    /// below the layer (a bypassing branch) from the item each row stands for.
    pub fn forward_from_with<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layer: &str,
        activations: ArrayView4<E>,
        items: &[usize],
        head: &H,
    ) -> Result<Array2<E>> {
        D::run_pass(self, |net| {
            net.forward_from_pass(input, layer, activations, items, head)
        })
    }

    fn forward_from_pass<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layer: &str,
        activations: ArrayView4<E>,
        items: &[usize],
        head: &H,
    ) -> Result<Array2<E>> {
        let v = self.value_of(layer)?;
        let n = input.dim().0;
        let m = activations.dim().0;
        if items.len() != m {
            return Err(Error::shape("items of the rows", m, items.len()));
        }
        if let Some(&bad) = items.iter().find(|&&i| i >= n) {
            return Err(Error::param(
                "items",
                format!("item {bad} is not in a batch of {n}"),
            ));
        }
        let x = self.input_tensor(&input)?;
        let keep: HashSet<usize> = (0..self.shapes.len()).collect();
        let mut tape = OwnedTape::default();
        let base = self.run(x, Rectifier::Gradient, usize::MAX, &mut tape, &keep, &[])?;
        let below = base[v].as_ref().expect("every value is kept");
        let [_, c, h, w] = ops::dims(below);
        let (_, ac, ah, aw) = activations.dim();
        if [ac, ah, aw] != [c, h, w] {
            return Err(Error::shape(
                format!("activations for `{layer}`"),
                format!("(M, {c}, {h}, {w})"),
                format!("({m}, {ac}, {ah}, {aw})"),
            ));
        }
        if let Some((idx, val)) = activations.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFiniteInput {
                index: [idx.0, idx.1, idx.2, idx.3],
                value: val.to_string(),
            });
        }
        let mut values: Vec<Option<Tensor4<E, D>>> = vec![None; self.shapes.len()];
        values[v] = Some(tensor4(
            &self.device,
            activations.iter().copied().collect(),
            [m, c, h, w],
        )?);
        for i in v..self.nodes.len() {
            let node = &self.nodes[i];
            for &u in &node.inputs {
                if u < v && values[u].is_none() {
                    values[u] = Some(
                        self.gather_rows(base[u].as_ref().expect("every value is kept"), items)?,
                    );
                }
            }
            let ins: Vec<&Tensor4<E, D>> = node
                .inputs
                .iter()
                .map(|&u| values[u].as_ref().expect("computed above"))
                .collect();
            let out =
                self.layer_forward(&node.layer, &ins, Rectifier::Gradient, None, &mut NoneTape)?;
            values[i + 1] = Some(out);
        }
        let out = values
            .last()
            .and_then(|v| v.as_ref())
            .expect("the output runs");
        Ok(self.scores_of(&self.head_scores(head, out, Rectifier::Gradient, &mut NoneTape)?))
    }

    fn activations_pass<H: Head<E, D>>(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<E>, Vec<Array4<E>>)> {
        let x = self.input_tensor(&input)?;
        let wanted: Vec<usize> = layers
            .iter()
            .map(|l| self.value_of(l))
            .collect::<Result<_>>()?;
        let keep: HashSet<usize> = wanted.iter().copied().collect();
        let mut tape = OwnedTape::default();
        let values = self.run(x, Rectifier::Gradient, usize::MAX, &mut tape, &keep, &[])?;
        let out = values.last().and_then(|v| v.as_ref()).expect("output kept");
        let scores =
            self.scores_of(&self.head_scores(head, out, Rectifier::Gradient, &mut NoneTape)?);
        let acts = wanted
            .iter()
            .map(|&v| self.to_array4(values[v].as_ref().expect("kept")))
            .collect();
        Ok((scores, acts))
    }
}

impl<E: Elem, D: KernelDevice<E>> LayerTap<E> for Network<E, D> {
    fn forward_from(
        &self,
        input: ArrayView4<E>,
        layer: &str,
        activations: ArrayView4<E>,
        items: &[usize],
    ) -> Result<Array2<E>> {
        self.forward_from_with(input, layer, activations, items, &Identity)
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.names
            .iter()
            .map(|n| LayerInfo {
                name: n.name.clone(),
                kind: n.kind.to_string(),
                shape: self.shapes[n.value],
                rectified: n.value > 0
                    && matches!(self.nodes[n.value - 1].layer, Layer::Rectifier(_)),
            })
            .collect()
    }

    fn default_layer(&self) -> String {
        self.default_layer.clone()
    }

    fn rectifiers_above(&self, layer: &str) -> Result<bool> {
        // Nodes are in forward order and node i produces value i + 1: one sweep
        // marks every value computed from the layer's.
        let mut reached = vec![false; self.shapes.len()];
        reached[self.value_of(layer)?] = true;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.inputs.iter().any(|&v| reached[v]) {
                if matches!(node.layer, Layer::Rectifier(_)) {
                    return Ok(true);
                }
                reached[i + 1] = true;
            }
        }
        Ok(false)
    }

    fn activations(
        &self,
        input: ArrayView4<E>,
        layers: &[String],
    ) -> Result<(Array2<E>, Vec<Array4<E>>)> {
        self.activations_with(input, layers, &Identity)
    }

    fn linear_head(&self) -> Option<LinearHead<E>> {
        let last = self.nodes.last()?;
        let Layer::Linear(fc) = &last.layer else {
            return None;
        };
        // Walk back from the classifier through flattens to a global average pool.
        let mut v = last.inputs[0];
        loop {
            let node = self.nodes.get(v.checked_sub(1)?)?;
            match node.layer {
                Layer::Flatten => v = node.inputs[0],
                Layer::AdaptiveAvgPool2d([1, 1]) => {
                    let map = node.inputs[0];
                    let layer = self
                        .names
                        .iter()
                        .rev()
                        .find(|n| n.value == map)?
                        .name
                        .clone();
                    return Some(LinearHead {
                        layer,
                        weight: fc.weight(),
                        bias: fc.bias(),
                    });
                }
                _ => return None,
            }
        }
    }
}

/// For a batch whose rows repeat: the first row of each distinct value, and for every
/// row the position of its value among those (`None` when all rows differ). Rows are
/// equal when every element is, zeros' signs included.
pub(crate) fn shared_rows<E: Elem>(
    host: &[E],
    [n, c, h, w]: [usize; 4],
) -> Option<(Vec<usize>, Vec<usize>)> {
    let per = c * h * w;
    let row = |i: usize| &host[i * per..(i + 1) * per];
    let same = |a: &[E], b: &[E]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| x == y && x.is_sign_negative() == y.is_sign_negative())
    };
    let mut distinct: Vec<usize> = Vec::new();
    let mut of_row = Vec::with_capacity(n);
    for i in 0..n {
        match distinct.iter().position(|&d| same(row(d), row(i))) {
            Some(k) => of_row.push(k),
            None => {
                of_row.push(distinct.len());
                distinct.push(i);
            }
        }
    }
    (distinct.len() < n).then_some((distinct, of_row))
}
