//! What reading one untrusted file may cost.

/// Budgets for reading one file. A file that needs more is refused with an error
/// naming the limit, before the memory is taken. The defaults read every real
/// checkpoint seen (the largest state dicts have some ten thousand tensors and
/// pickles of a few MB) while keeping a hostile file of any size well under 1 GiB
/// beyond its own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a zip checkpoint's `data.pkl`.
    pub max_pickle_bytes: usize,
    /// Values a pickle builds (ints, strings, tuples, ...), and memo entries.
    pub max_pickle_values: usize,
    /// Slots in containers and on the pickle stack, summed.
    pub max_pickle_items: usize,
    /// Nesting depth of containers.
    pub max_pickle_depth: usize,
    /// Bytes of strings, long integers and tensor names, summed.
    pub max_pickle_string_bytes: usize,
    /// Tensors in a state dict.
    pub max_tensors: usize,
    /// With [`Limits::tensor_bytes_slack`]: inflated storages and materialised tensors
    /// may take `file size * tensor_bytes_per_file_byte + tensor_bytes_slack` bytes.
    /// More than one because tensors may share a storage (tied weights); bounded
    /// because an expanded view (stride 0) is saved as its storage alone.
    pub tensor_bytes_per_file_byte: u64,
    /// See [`Limits::tensor_bytes_per_file_byte`].
    pub tensor_bytes_slack: u64,
    /// Elements of a `.npy` array.
    pub max_npy_elements: usize,
    /// Pixels of a decoded image (width x height).
    pub max_image_pixels: u64,
    /// Bytes an image decoder may allocate.
    pub max_image_alloc: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pickle_bytes: 64 << 20,
            max_pickle_values: 4 << 20,
            max_pickle_items: 16 << 20,
            max_pickle_depth: 256,
            max_pickle_string_bytes: 64 << 20,
            max_tensors: 100_000,
            tensor_bytes_per_file_byte: 2,
            tensor_bytes_slack: 256 << 20,
            max_npy_elements: 1 << 28,
            max_image_pixels: 40_000_000,
            max_image_alloc: 512 << 20,
        }
    }
}
