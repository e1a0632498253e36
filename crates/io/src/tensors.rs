//! Tensors as checkpoints store them: an element type, a shape and little-endian
//! bytes, converted to floats only when a consumer asks.

use attrib_core::{Error, Result, Scalar};

/// Element types found in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8
    U8,
    /// bool
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub(crate) fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as S;
        match self {
            DType::F32 => S::F32,
            DType::F64 => S::F64,
            DType::F16 => S::F16,
            DType::BF16 => S::BF16,
            DType::I64 => S::I64,
            DType::I32 => S::I32,
            DType::I16 => S::I16,
            DType::I8 => S::I8,
            DType::U8 => S::U8,
            DType::Bool => S::BOOL,
        }
    }

    pub(crate) fn from_safetensors(d: safetensors::Dtype) -> Result<Self> {
        use safetensors::Dtype as S;
        Ok(match d {
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I64 => DType::I64,
            S::I32 => DType::I32,
            S::I16 => DType::I16,
            S::I8 => DType::I8,
            S::U8 => DType::U8,
            S::BOOL => DType::Bool,
            other => {
                return Err(Error::Weights(format!(
                    "unsupported safetensors dtype {other:?}"
                )))
            }
        })
    }
}

/// A tensor's little-endian bytes, dtype and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Contiguous little-endian data.
    pub bytes: Vec<u8>,
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

impl RawTensor {
    /// The values as `E`, converting floating types; integer tensors are refused.
    pub fn to_vec<E: Scalar>(&self) -> Result<Vec<E>> {
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| E::of(f32::from_le_bytes(c.try_into().expect("4")) as f64))
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| E::of(f64::from_le_bytes(c.try_into().expect("8"))))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| E::of(f16_to_f64(u16::from_le_bytes([c[0], c[1]]))))
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| {
                    E::of(f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
                })
                .collect(),
            other => {
                return Err(Error::Weights(format!(
                    "expected a floating-point tensor, found {other:?}"
                )))
            }
        })
    }

    /// A float32 tensor.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        RawTensor {
            dtype: DType::F32,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}
