//! A model seen through a stack of copies of a batch's items, for methods that
//! evaluate the model at perturbed copies (integrated gradients' path points, a noise
//! tunnel's samples): row `j` of what it is given stands for item `items[j]`, so a
//! model conditioned on a query per item pairs every row with its item's query.

use attrib_core::{
    BackwardOutput, BackwardRequest, LayerInfo, LayerTap, LinearHead, Model, Result, Scalar,
};
use ndarray::{Array2, Array4, ArrayView4};

/// `model` with its rows standing for `items` of the original batch (see the module).
#[derive(Debug, Clone)]
pub struct ItemRows<'a, M: ?Sized> {
    model: &'a M,
    items: Vec<usize>,
}

impl<'a, M: ?Sized> ItemRows<'a, M> {
    /// Row `j` stands for item `items[j]`.
    pub fn new(model: &'a M, items: Vec<usize>) -> Self {
        ItemRows { model, items }
    }

    fn compose(&self, rows: &[usize]) -> Result<Vec<usize>> {
        rows.iter()
            .map(|&j| {
                self.items.get(j).copied().ok_or_else(|| {
                    attrib_core::Error::param(
                        "rows",
                        format!("row {j} is beyond the {} stacked rows", self.items.len()),
                    )
                })
            })
            .collect()
    }
}

impl<F: Scalar, M: Model<F> + ?Sized> Model<F> for ItemRows<'_, M> {
    fn input_shape(&self) -> [usize; 3] {
        self.model.input_shape()
    }

    fn num_outputs(&self) -> usize {
        self.model.num_outputs()
    }

    fn forward(&self, input: ArrayView4<F>) -> Result<Array2<F>> {
        self.model.forward_items(input, &self.items)
    }

    fn backward(&self, req: &BackwardRequest<'_, F>) -> Result<BackwardOutput<F>> {
        self.model.backward_items(req, &self.items)
    }

    fn forward_items(&self, input: ArrayView4<F>, items: &[usize]) -> Result<Array2<F>> {
        self.model.forward_items(input, &self.compose(items)?)
    }

    fn backward_items(
        &self,
        req: &BackwardRequest<'_, F>,
        items: &[usize],
    ) -> Result<BackwardOutput<F>> {
        self.model.backward_items(req, &self.compose(items)?)
    }
}

/// The layers are the model's. Running from a layer is not offered: its rows index
/// the stacked input while the model's queries follow the original items, and no
/// method that stacks copies needs it.
impl<F: Scalar, M: LayerTap<F> + ?Sized> LayerTap<F> for ItemRows<'_, M> {
    fn layers(&self) -> Vec<LayerInfo> {
        self.model.layers()
    }

    fn default_layer(&self) -> String {
        self.model.default_layer()
    }

    fn activations(
        &self,
        input: ArrayView4<F>,
        layers: &[String],
    ) -> Result<(Array2<F>, Vec<Array4<F>>)> {
        self.model.activations_items(input, layers, &self.items)
    }

    fn activations_items(
        &self,
        input: ArrayView4<F>,
        layers: &[String],
        items: &[usize],
    ) -> Result<(Array2<F>, Vec<Array4<F>>)> {
        self.model
            .activations_items(input, layers, &self.compose(items)?)
    }

    fn linear_head(&self) -> Option<LinearHead<F>> {
        self.model.linear_head()
    }

    fn rectifiers_above(&self, layer: &str) -> Result<bool> {
        self.model.rectifiers_above(layer)
    }
}
