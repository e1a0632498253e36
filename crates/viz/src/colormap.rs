//! Colormaps from `[0, 1]` to RGB.

/// A colormap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// matplotlib's `jet` (the Grad-CAM paper's figures): dark blue at 0, dark red at 1.
    Jet,
    /// A blue-white-red diverging map for signed values normalised with
    /// [`Normalization::Symmetric`](crate::Normalization::Symmetric): 0.5 is white.
    Diverging,
    /// matplotlib's `viridis`: perceptually uniform, readable in grey and by colour-blind readers.
    Viridis,
    /// Google's `turbo`: a smoother, perceptually better rainbow than jet.
    Turbo,
    /// Grey levels.
    Gray,
}

/// Piecewise-linear interpolation through `(x, y)` control points sorted by `x`.
fn segments(points: &[(f32, f32)], x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            return if x1 > x0 {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            } else {
                y1
            };
        }
    }
    points.last().map_or(0.0, |p| p.1)
}

impl Colormap {
    /// Every colormap with its name.
    pub const ALL: [(&'static str, Colormap); 5] = [
        ("jet", Colormap::Jet),
        ("viridis", Colormap::Viridis),
        ("turbo", Colormap::Turbo),
        ("diverging", Colormap::Diverging),
        ("gray", Colormap::Gray),
    ];

    /// The colormap called `name`.
    pub fn from_name(name: &str) -> Option<Colormap> {
        Colormap::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    }

    /// The colour of `v` (clamped to `[0, 1]`; NaN maps like 0).
    pub fn rgb(self, v: f32) -> [u8; 3] {
        let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        let lut = |t: &[[u8; 3]; 256]| t[(v * 255.0).round() as usize];
        let f = match self {
            Colormap::Viridis => return lut(&crate::luts::VIRIDIS),
            Colormap::Turbo => return lut(&crate::luts::TURBO),
            // matplotlib's _jet_data segment tables.
            Colormap::Jet => [
                segments(
                    &[
                        (0.0, 0.0),
                        (0.35, 0.0),
                        (0.66, 1.0),
                        (0.89, 1.0),
                        (1.0, 0.5),
                    ],
                    v,
                ),
                segments(
                    &[
                        (0.0, 0.0),
                        (0.125, 0.0),
                        (0.375, 1.0),
                        (0.64, 1.0),
                        (0.91, 0.0),
                        (1.0, 0.0),
                    ],
                    v,
                ),
                segments(
                    &[
                        (0.0, 0.5),
                        (0.11, 1.0),
                        (0.34, 1.0),
                        (0.65, 0.0),
                        (1.0, 0.0),
                    ],
                    v,
                ),
            ],
            Colormap::Diverging => [
                segments(&[(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)], v),
                segments(&[(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)], v),
                segments(&[(0.0, 1.0), (0.5, 1.0), (1.0, 0.0)], v),
            ],
            Colormap::Gray => [v, v, v],
        };
        f.map(|c| (c * 255.0).round() as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
        // matplotlib: jet(0.5) = (0.4839, 1.0, 0.4839).
        assert_eq!(Colormap::Jet.rgb(0.5), [123, 255, 123]);
        assert_eq!(Colormap::Diverging.rgb(0.5), [255, 255, 255]);
        assert_eq!(Colormap::Diverging.rgb(0.0), [0, 0, 255]);
        assert_eq!(Colormap::Diverging.rgb(1.0), [255, 0, 0]);
        assert_eq!(Colormap::Gray.rgb(f32::NAN), [0, 0, 0]);
        // matplotlib: viridis(0), viridis(0.5), viridis(1); turbo likewise.
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(0.5), [33, 145, 140]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        assert_eq!(Colormap::Turbo.rgb(0.0), [48, 18, 59]);
        assert_eq!(Colormap::Turbo.rgb(0.5), [164, 252, 60]);
        assert_eq!(Colormap::Turbo.rgb(1.0), [122, 4, 3]);
    }
}
