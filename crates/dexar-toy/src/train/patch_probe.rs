//! The patch probe: two throw-away linear heads that read, from every image
//! token exactly as the decoder receives it (tower and projector), the colour
//! and the shape of the object under that patch, or background.
//!
//! Why: LLaVA starts from a pretrained CLIP whose patch tokens already say
//! what is where; ours starts from nothing. Trained on answers alone, the
//! tower learned colour (linear in the pixels) and hardly any shape; a probe
//! on max-pooled tokens taught shape but mixed it across patches, and colour
//! and shape then competed. Asking each token for both attributes of *its*
//! object keeps tokens local (what the decoder must find by attention, and
//! what DEX-AR points at) and binds colour to shape at the same place.
//!
//! Stage 1 trains tower, projector and probe on it alone (no decoder, so
//! steps are cheap); stage 2 keeps it beside the answers with a small weight,
//! on the same forward pass of the batch's images.

use candle_core::{DType, Device, Tensor, Var, D};

use crate::shapes::{Color, Scene, Shape};
use crate::ToyError;

/// Colour classes: the colours, then background.
const COLOR_CLASSES: usize = Color::ALL.len() + 1;
/// Shape classes: the shapes, then background.
const SHAPE_CLASSES: usize = Shape::ALL.len() + 1;

/// A patch is labelled with the object covering most of it when that object
/// covers at least this fraction; a patch no object touches is background;
/// patches in between (a sliver of an edge) are left out of the loss.
const MIN_COVER: f32 = 0.25;

/// Probe weights start from their own stream of the training seed.
const PROBE_STREAM: u64 = 0x9b0b_e5ee;

/// Per-patch targets of a batch of images, row-major patches image by image.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PatchTargets {
    pub colors: Vec<u32>,
    pub shapes: Vec<u32>,
    /// 1 for patches in the loss, 0 for left-out ones.
    pub weights: Vec<f32>,
}

impl PatchTargets {
    /// Appends the targets of `scene` on a `grid` x `grid` patch partition.
    pub fn push_scene(&mut self, scene: &Scene, grid: usize) {
        let (w, h) = scene.image.dimensions();
        let (pw, ph) = (w as usize / grid, h as usize / grid);
        let area = (pw * ph) as f32;
        for row in 0..grid {
            for col in 0..grid {
                let mut best: Option<(usize, usize)> = None; // (pixels, object)
                for (i, o) in scene.objects.iter().enumerate() {
                    let mut n = 0;
                    for y in row * ph..(row + 1) * ph {
                        for x in col * pw..(col + 1) * pw {
                            n += usize::from(o.covers(x as u32, y as u32));
                        }
                    }
                    if n > 0 && best.is_none_or(|(m, _)| n > m) {
                        best = Some((n, i));
                    }
                }
                let (color, shape, weight) = match best {
                    None => (Color::ALL.len(), Shape::ALL.len(), 1.0),
                    Some((n, i)) => {
                        let o = &scene.objects[i];
                        let cover = n as f32 / area;
                        let weight = if cover >= MIN_COVER { 1.0 } else { 0.0 };
                        (o.color as usize, o.shape as usize, weight)
                    }
                };
                self.colors.push(color as u32);
                self.shapes.push(shape as u32);
                self.weights.push(weight);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }
}

/// The probe's two linear heads.
pub(crate) struct PatchProbe {
    color: (Var, Var),
    shape: (Var, Var),
}

impl PatchProbe {
    /// Heads over `dim`-wide tokens, initialised like PyTorch's `nn.Linear`.
    pub fn new(dim: usize, seed: u64) -> Result<Self, ToyError> {
        let mut rng = crate::rng::SplitMix64::for_scene(seed, PROBE_STREAM);
        let a = 1.0 / (dim as f32).sqrt();
        let mut head = |classes: usize| -> Result<(Var, Var), ToyError> {
            let init: Vec<f32> = (0..classes * dim)
                .map(|_| (rng.unit_f32() * 2.0 - 1.0) * a)
                .collect();
            Ok((
                Var::from_tensor(&Tensor::from_vec(init, (classes, dim), &Device::Cpu)?)?,
                Var::zeros(classes, DType::F32, &Device::Cpu)?,
            ))
        };
        Ok(Self {
            color: head(COLOR_CLASSES)?,
            shape: head(SHAPE_CLASSES)?,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.color.0.clone(),
            self.color.1.clone(),
            self.shape.0.clone(),
            self.shape.1.clone(),
        ]
    }

    /// Mean cross-entropy of the colour head plus that of the shape head over
    /// the weighted patches. `tokens` is `[I, N, D]`, the targets `I * N` long.
    pub fn loss(&self, tokens: &Tensor, targets: &PatchTargets) -> Result<Tensor, ToyError> {
        let (images, n, dim) = tokens.dims3()?;
        if images * n != targets.len() {
            return Err(ToyError::Options(format!(
                "{} patch targets for {images} x {n} image tokens",
                targets.len()
            )));
        }
        let flat = tokens.reshape((images * n, dim))?;
        let device = tokens.device();
        let weights = Tensor::new(targets.weights.as_slice(), device)?;
        let total = targets.weights.iter().sum::<f32>().max(1.0) as f64;
        let mut loss: Option<Tensor> = None;
        for ((w, b), labels) in [
            (&self.color, &targets.colors),
            (&self.shape, &targets.shapes),
        ] {
            let logits = flat
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let nll = row_nll(&logits, &Tensor::new(labels.as_slice(), device)?)?;
            let head = ((nll * &weights)?.sum_all()? / total)?;
            loss = Some(match loss {
                Some(l) => (l + head)?,
                None => head,
            });
        }
        loss.ok_or_else(|| ToyError::Options("probe without heads".into()))
    }
}

/// `-log softmax(logits)[target]` per row, `[R]`.
fn row_nll(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    (log_z - picked)?.squeeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{generate, SceneConfig};

    #[test]
    fn targets_follow_the_masks() {
        let config = SceneConfig::default().noise_free();
        for index in 0..30 {
            let scene = generate(&config, 3, index);
            let mut t = PatchTargets::default();
            t.push_scene(&scene, 8);
            assert_eq!(t.len(), 64);
            for (p, &w) in t.weights.iter().enumerate() {
                let (row, col) = (p / 8, p % 8);
                let (cx, cy) = (col as u32 * 8 + 4, row as u32 * 8 + 4);
                // A patch whose centre 2x2 pixels lie in one object is labelled
                // with it (a diamond or star tip can be thinner than that).
                let inside = scene.objects.iter().find(|o| {
                    [(0, 0), (1, 0), (0, 1), (1, 1)]
                        .iter()
                        .all(|(dx, dy)| o.covers(cx - 1 + dx, cy - 1 + dy))
                });
                if let Some(o) = inside {
                    if w == 1.0 {
                        assert_eq!(t.colors[p], o.color as u32);
                        assert_eq!(t.shapes[p], o.shape as u32);
                    }
                }
                let touched = (row * 8..row * 8 + 8).any(|y| {
                    (col * 8..col * 8 + 8)
                        .any(|x| scene.objects.iter().any(|o| o.covers(x as u32, y as u32)))
                });
                if !touched {
                    assert_eq!((t.colors[p], t.shapes[p], w), (8, 6, 1.0));
                } else if w == 1.0 {
                    assert!(t.colors[p] < 8 && t.shapes[p] < 6);
                }
            }
            // Every object large enough owns at least one labelled patch.
            for o in &scene.objects {
                if o.area() >= 2 * 64 {
                    assert!(
                        (0..64).any(|p| t.weights[p] == 1.0 && t.colors[p] == o.color as u32),
                        "{} {} has no patch",
                        o.color.name(),
                        o.shape.name()
                    );
                }
            }
        }
    }

    #[test]
    fn loss_is_the_weighted_mean_cross_entropy_of_both_heads() {
        let probe = PatchProbe::new(4, 1).unwrap();
        let tokens = Tensor::new(
            &[[
                [0.5f32, -1.0, 2.0, 0.0],
                [1.0, 1.0, -0.5, 0.25],
                [0.0, 3.0, 0.0, -1.0],
            ]],
            &Device::Cpu,
        )
        .unwrap();
        let targets = PatchTargets {
            colors: vec![2, 8, 5],
            shapes: vec![1, 6, 3],
            weights: vec![1.0, 0.0, 1.0],
        };
        let got = probe
            .loss(&tokens, &targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Plain loops over the same weights.
        let rows: Vec<Vec<f32>> = tokens.squeeze(0).unwrap().to_vec2().unwrap();
        let mut expected = 0.0f32;
        for (head, labels) in [
            (&probe.color, &targets.colors),
            (&probe.shape, &targets.shapes),
        ] {
            let w: Vec<Vec<f32>> = head.0.as_tensor().to_vec2().unwrap();
            let b: Vec<f32> = head.1.as_tensor().to_vec1().unwrap();
            let mut sum = 0.0;
            for (r, row) in rows.iter().enumerate() {
                let logits: Vec<f32> = w
                    .iter()
                    .zip(&b)
                    .map(|(wc, bc)| wc.iter().zip(row).map(|(a, x)| a * x).sum::<f32>() + bc)
                    .collect();
                let log_z = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
                sum += targets.weights[r] * (log_z - logits[labels[r] as usize]);
            }
            expected += sum / 2.0;
        }
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        let short = PatchTargets {
            colors: vec![0],
            shapes: vec![0],
            weights: vec![1.0],
        };
        assert!(probe.loss(&tokens, &short).is_err());
    }
}
