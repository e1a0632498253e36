//! Parallel loops over slices shared by the kernels: chunked element-wise maps
//! that stay serial when small, the rectifier masks, and a shared output pointer for
//! kernels whose tasks write disjoint parts of one buffer.

use attrib_core::{Rectifier, RectifierKind};
use rayon::prelude::*;

use crate::Elem;

/// Elements per task of elementwise kernels: large enough that a task costs more
/// than handing it to another thread.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `f(start, chunk)` over `xs` in chunks of [`ELEMENTWISE_CHUNK`] starting at
/// `start`, in parallel when there is more than one; callers index their other
/// operands from `start`.
pub(crate) fn par_chunks_from<T: Send>(xs: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if xs.len() <= ELEMENTWISE_CHUNK {
        f(0, xs);
    } else {
        xs.par_chunks_mut(ELEMENTWISE_CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(i * ELEMENTWISE_CHUNK, c));
    }
}

/// A new vector of `f(a[i], b[i])`, written once in parallel chunks for long
/// slices (copying `a` and updating it would write every value twice, the copy
/// serially).
pub(crate) fn par_zip_new<E: Elem>(a: &[E], b: &[E], f: impl Fn(E, E) -> E + Sync) -> Vec<E> {
    let n = a.len().min(b.len());
    let mut v = Vec::with_capacity(n);
    par_chunks_from(&mut v.spare_capacity_mut()[..n], |at, chunk| {
        for ((d, &x), &y) in chunk.iter_mut().zip(&a[at..]).zip(&b[at..]) {
            d.write(f(x, y));
        }
    });
    // SAFETY: the chunks cover 0..n and each wrote all its values.
    unsafe { v.set_len(n) };
    v
}

/// `f(dst[i], &src[i])` for every `i`, in parallel chunks for long slices.
pub(crate) fn par_map<E: Elem>(dst: &mut [E], src: &[E], f: impl Fn(&mut E, &E) + Sync) {
    par_chunks_from(dst, |at, d| {
        d.iter_mut().zip(&src[at..]).for_each(|(d, s)| f(d, s))
    });
}

/// Binds `$keep` to the predicate `keep(y, g)` of `rule` for a rectifier of `kind`
/// (`y` its output, `g` the incoming gradient) and evaluates `$body` with it: one
/// monomorphic, branch-free closure per case, so that each loop is one select.
macro_rules! with_keep {
    ($kind:expr, $rule:expr, |$keep:ident| $body:expr) => {{
        let (zero, six) = (E::zero(), E::of(6.0));
        match ($rule, $kind) {
            (Rectifier::Deconvnet, _) => {
                let $keep = move |_: E, g: E| g > zero;
                $body
            }
            (Rectifier::Gradient, RectifierKind::Relu) => {
                let $keep = move |v: E, _: E| v > zero;
                $body
            }
            (Rectifier::Gradient, RectifierKind::Relu6) => {
                let $keep = move |v: E, _: E| (v > zero) & (v < six);
                $body
            }
            (Rectifier::Guided, RectifierKind::Relu) => {
                let $keep = move |v: E, g: E| (v > zero) & (g > zero);
                $body
            }
            (Rectifier::Guided, RectifierKind::Relu6) => {
                let $keep = move |v: E, g: E| (v > zero) & (v < six) & (g > zero);
                $body
            }
        }
    }};
}

/// `dy = rule(dy)` in place: the gradient through a rectifier of `kind`, whose
/// forward output `y` tells where it is active (`None` for deconvnet, which does not
/// look).
pub fn rectifier_mask<E: Elem>(
    kind: RectifierKind,
    rule: Rectifier,
    y: Option<&[E]>,
    dy: &mut [E],
) {
    if let Some(y) = y {
        assert!(y.len() == dy.len(), "rectifier gradient lengths");
    }
    with_keep!(kind, rule, |keep| par_chunks_from(dy, |at, g| match y {
        Some(y) => g.iter_mut().zip(&y[at..]).for_each(|(g, &v)| {
            *g = if keep(v, *g) { *g } else { E::zero() };
        }),
        None => g.iter_mut().for_each(|g| {
            *g = if keep(*g, *g) { *g } else { E::zero() };
        }),
    }))
}

/// `f(x)` for every element, in place, in parallel chunks for long slices.
pub(crate) fn par_update<E: Elem>(xs: &mut [E], f: impl Fn(&mut E) + Sync) {
    par_chunks_from(xs, |_, c| c.iter_mut().for_each(&f));
}

/// An output slice written concurrently by tasks that own disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<E>(pub(crate) *mut E);

// SAFETY: the pointer is only used through `row`, whose callers guarantee disjoint,
// in-bounds rows.
unsafe impl<E: Send> Send for SharedOut<E> {}
unsafe impl<E: Send> Sync for SharedOut<E> {}

impl<E> SharedOut<E> {
    /// The `len` elements from `at`.
    ///
    /// # Safety
    /// They lie inside the slice and no other thread accesses them meanwhile.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn row(&self, at: usize, len: usize) -> &mut [E] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }

    /// A pointer to element `at`, for writes the caller owns.
    ///
    /// # Safety
    /// `at` lies inside the slice.
    #[inline]
    pub(crate) unsafe fn at(&self, at: usize) -> *mut E {
        self.0.add(at)
    }
}
