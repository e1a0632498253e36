use thiserror::Error;

/// Everything that can go wrong when explaining a model. Each variant names the
/// problem precisely enough to fix it without reading the source.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A tensor has the wrong shape for where it is used.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// What was being checked (an input, a layer, a seed, ...).
        what: String,
        /// The expected shape, written out.
        expected: String,
        /// The shape that arrived.
        got: String,
    },

    /// A layer name that the model does not have.
    #[error("unknown layer `{name}`; valid layers: {}", valid.join(", "))]
    UnknownLayer {
        /// The name asked for.
        name: String,
        /// Every tappable layer, in forward order.
        valid: Vec<String>,
    },

    /// A class index beyond the number of outputs.
    #[error("class {class} out of range for batch item {item}: the model has {num_classes} outputs (valid 0..={max})", max = num_classes.saturating_sub(1))]
    ClassOutOfRange {
        /// The class asked for.
        class: usize,
        /// The batch item it was asked for.
        item: usize,
        /// The number of model outputs.
        num_classes: usize,
    },

    /// A target on an output the model leaves undefined for an item (NaN): a step
    /// beyond an item's caption, say, in a batch of captions of different lengths.
    #[error("output {output} of batch item {item} is not defined for that item (e.g. a step beyond its caption); explain only outputs it has")]
    UndefinedOutput {
        /// The batch item.
        item: usize,
        /// The output index.
        output: usize,
    },

    /// A batch with no items.
    #[error("empty batch: the input has no items")]
    EmptyBatch,

    /// NaN or infinity in the input.
    #[error("non-finite input value {value} at [{}]", index.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))]
    NonFiniteInput {
        /// NCHW index of the first non-finite value.
        index: [usize; 4],
        /// The value, printed.
        value: String,
    },

    /// A method that needs something the model does not have.
    #[error("{method} is not applicable: {reason}")]
    Unsupported {
        /// The method.
        method: String,
        /// Why, and what would make it applicable.
        reason: String,
    },

    /// A parameter out of its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Weights that do not fit an architecture, or a damaged weights file.
    #[error("weights: {0}")]
    Weights(String),

    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },

    /// The backend's device failed (allocation, a kernel launch).
    #[error("backend: {0}")]
    Backend(String),
}

impl Error {
    /// Shorthand for [`Error::ShapeMismatch`] from anything printable.
    pub fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::ShapeMismatch {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(method: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            method: method.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with attrib's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
