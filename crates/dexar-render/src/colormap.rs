//! Perceptual colormaps from anchor tables with linear interpolation.

use std::fmt;
use std::str::FromStr;

use crate::RenderError;

/// A colormap mapping `t` in `[0, 1]` to an sRGB colour.
///
/// Inferno (the default) and viridis are perceptually uniform with monotone
/// lightness, so "brighter" reads as "more attention" even in greyscale;
/// turbo is a high-contrast rainbow for spotting small differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Colormap {
    #[default]
    Inferno,
    Viridis,
    Turbo,
}

impl Colormap {
    /// Every colormap, in the order of [`Colormap::NAMES`].
    pub const ALL: [Colormap; 3] = [Colormap::Inferno, Colormap::Viridis, Colormap::Turbo];
    /// The names accepted by [`FromStr`], for CLI help and completion.
    pub const NAMES: [&'static str; 3] = ["inferno", "viridis", "turbo"];

    pub fn name(&self) -> &'static str {
        match self {
            Colormap::Inferno => "inferno",
            Colormap::Viridis => "viridis",
            Colormap::Turbo => "turbo",
        }
    }

    /// The colour at `t`, clamped to `[0, 1]`; NaN maps like 0.
    pub fn rgb(&self, t: f32) -> [u8; 3] {
        let table = match self {
            Colormap::Inferno => &INFERNO,
            Colormap::Viridis => &VIRIDIS,
            Colormap::Turbo => &TURBO,
        };
        // `clamp` keeps NaN, so map it to 0 first.
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let x = t * (ANCHORS - 1) as f32;
        let i = (x.floor() as usize).min(ANCHORS - 2);
        let f = x - i as f32;
        let (a, b) = (table[i], table[i + 1]);
        std::array::from_fn(|c| {
            let v = f32::from(a[c]) + (f32::from(b[c]) - f32::from(a[c])) * f;
            v.round().clamp(0.0, 255.0) as u8
        })
    }
}

impl fmt::Display for Colormap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Colormap {
    type Err = RenderError;

    /// Parses a name from [`Colormap::NAMES`], ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Colormap::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| RenderError::UnknownColormap {
                name: s.to_string(),
            })
    }
}

const ANCHORS: usize = 33;

// Samples of matplotlib's 256-entry listed colormaps (`_cm_listed.py`, the
// published viridis/inferno definitions by van der Walt & Smith, and Google's
// turbo) at entries round(i * 255 / 32), i = 0..=32, scaled to 0..=255.
// Linear interpolation between them stays within ~2/255 of the full tables.
#[rustfmt::skip]
const INFERNO: [[u8; 3]; ANCHORS] = [
    [0, 0, 4], [4, 3, 18], [11, 7, 36], [21, 11, 55],
    [33, 12, 74], [47, 10, 91], [61, 9, 101], [74, 12, 107],
    [87, 16, 110], [100, 21, 110], [113, 25, 110], [125, 30, 109],
    [138, 34, 106], [151, 39, 102], [163, 44, 97], [176, 49, 91],
    [188, 55, 84], [198, 61, 77], [208, 69, 69], [218, 78, 60],
    [227, 89, 51], [235, 100, 41], [241, 113, 31], [246, 126, 20],
    [249, 140, 10], [251, 155, 6], [252, 170, 15], [251, 186, 31],
    [249, 201, 50], [245, 217, 73], [242, 232, 101], [243, 245, 134],
    [252, 255, 164],
];
#[rustfmt::skip]
const VIRIDIS: [[u8; 3]; ANCHORS] = [
    [68, 1, 84], [71, 13, 96], [72, 24, 106], [72, 35, 116],
    [71, 45, 123], [69, 55, 129], [66, 64, 134], [62, 73, 137],
    [59, 82, 139], [55, 91, 141], [51, 99, 141], [47, 107, 142],
    [44, 114, 142], [41, 122, 142], [38, 130, 142], [35, 137, 142],
    [33, 145, 140], [31, 151, 139], [31, 159, 136], [33, 166, 133],
    [39, 173, 129], [49, 181, 123], [61, 188, 116], [76, 194, 108],
    [92, 200, 99], [110, 206, 88], [129, 211, 77], [149, 216, 64],
    [170, 220, 50], [192, 223, 37], [213, 226, 26], [234, 229, 26],
    [253, 231, 37],
];
#[rustfmt::skip]
const TURBO: [[u8; 3]; ANCHORS] = [
    [48, 18, 59], [57, 42, 115], [64, 64, 162], [68, 86, 199],
    [70, 107, 227], [70, 128, 246], [66, 148, 255], [55, 168, 250],
    [40, 188, 235], [28, 205, 216], [24, 221, 194], [31, 233, 175],
    [50, 242, 152], [78, 249, 125], [109, 254, 98], [139, 255, 75],
    [164, 252, 60], [183, 247, 53], [203, 237, 52], [221, 224, 55],
    [236, 209, 58], [247, 193, 58], [253, 174, 53], [254, 153, 44],
    [251, 129, 34], [245, 105, 24], [236, 83, 15], [225, 65, 9],
    [210, 49, 5], [193, 35, 2], [172, 23, 1], [149, 13, 1],
    [122, 4, 3],
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative luminance Y of an sRGB colour (linear light, Rec. 709).
    fn luminance(c: [u8; 3]) -> f32 {
        let lin = |v: u8| {
            let v = f32::from(v) / 255.0;
            if v <= 0.04045 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    }

    #[test]
    fn endpoints_match_published_tables() {
        assert_eq!(Colormap::Inferno.rgb(0.0), [0, 0, 4]);
        assert_eq!(Colormap::Inferno.rgb(1.0), [252, 255, 164]);
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        assert_eq!(Colormap::Turbo.rgb(0.0), [48, 18, 59]);
        assert_eq!(Colormap::Turbo.rgb(1.0), [122, 4, 3]);
    }

    #[test]
    fn clamps_and_maps_nan_to_zero() {
        let c = Colormap::Inferno;
        assert_eq!(c.rgb(-3.0), c.rgb(0.0));
        assert_eq!(c.rgb(7.0), c.rgb(1.0));
        assert_eq!(c.rgb(f32::NAN), c.rgb(0.0));
        assert_eq!(c.rgb(f32::INFINITY), c.rgb(1.0));
        assert_eq!(c.rgb(f32::NEG_INFINITY), c.rgb(0.0));
    }

    #[test]
    fn interpolates_between_anchors() {
        // Halfway between anchors 0 [0,0,4] and 1 [4,3,18].
        assert_eq!(Colormap::Inferno.rgb(0.5 / 32.0), [2, 2, 11]);
        // Exactly on anchor 16.
        assert_eq!(Colormap::Inferno.rgb(0.5), [188, 55, 84]);
    }

    #[test]
    fn inferno_and_viridis_luminance_is_monotone() {
        for cmap in [Colormap::Inferno, Colormap::Viridis] {
            // Strictly increasing at every half-anchor step...
            let coarse: Vec<f32> = (0..=64)
                .map(|i| luminance(cmap.rgb(i as f32 / 64.0)))
                .collect();
            for (i, pair) in coarse.windows(2).enumerate() {
                assert!(
                    pair[1] > pair[0],
                    "{cmap} luminance drops at {i}/64: {pair:?}"
                );
            }
            // ...and between them only u8 rounding can wobble it.
            let fine: Vec<f32> = (0..=1000)
                .map(|i| luminance(cmap.rgb(i as f32 / 1000.0)))
                .collect();
            for (i, pair) in fine.windows(2).enumerate() {
                assert!(
                    pair[1] > pair[0] - 0.003,
                    "{cmap} luminance drops at {i}/1000: {pair:?}"
                );
            }
            assert!(coarse[64] > coarse[0] + 0.7);
        }
    }

    #[test]
    fn names_round_trip() {
        for (cmap, name) in Colormap::ALL.iter().zip(Colormap::NAMES) {
            assert_eq!(cmap.name(), name);
            assert_eq!(name.parse::<Colormap>().ok(), Some(*cmap));
            assert_eq!(cmap.to_string(), name);
        }
        assert_eq!("Viridis".parse::<Colormap>().ok(), Some(Colormap::Viridis));
        assert_eq!(Colormap::default(), Colormap::Inferno);
        let err = "jet".parse::<Colormap>().unwrap_err().to_string();
        assert!(
            err.contains("'jet'") && err.contains("inferno, viridis, turbo"),
            "{err}"
        );
    }
}
