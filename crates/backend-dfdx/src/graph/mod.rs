//! Networks as graphs of named layers: the builder, the layers and the executor that
//! turns one `BackwardRequest` into one forward and one backward pass on the tape.

mod head;
mod layers;
mod network;

pub use head::{Executor, Head, Identity, WithHead};

pub use layers::{BatchNorm2d, Conv2d, Layer, Linear};
pub(crate) use network::shared_rows;
pub use network::{Network, NetworkBuilder, ValueId};
