//! The patch probe: from every image token, the colour and the shape of the
//! object under that patch, or background. By default it reads through the
//! decoder's own logit lens (final norm, then the LM-head rows of the colour
//! and shape words), at the decoder's input and, in stage 2, at the image
//! positions of every decoder layer's output that a later layer attends to.
//!
//! Why a probe: LLaVA starts from a pretrained CLIP whose patch tokens already
//! say what is where; ours starts from nothing. Trained on answers alone, the
//! tower learned colour (linear in the pixels) and hardly any shape; a probe
//! on max-pooled tokens taught shape but mixed it across patches, and colour
//! and shape then competed. Asking each token for both attributes of *its*
//! object keeps tokens local and binds colour to shape at the same place.
//!
//! Why the lens, the decoder layers and the patch centres: with throw-away
//! linear heads the answers were as good, but DEX-AR's gradients (the value
//! vectors a head reads, seen through the logit lens) pointed at the named
//! object for 65% of object words: shape words peaked on background or on
//! the object's edge. Tokens that say their words in the LM head's own terms,
//! also after the decoder has processed them, and labels taken where an
//! upsampled heatmap puts a patch (its centre) bring that to about 80-85%
//! (docs/demo-model.md, docs/findings.md). A pretrained LLaVA's image tokens are
//! known to be partly readable through its logit lens, too.
//!
//! Stage 1 trains tower, projector, LM head, final norm and probe on it alone
//! (no decoder layers, so steps are cheap); stage 2 keeps it beside the
//! answers with a small weight, on the same forward pass of the batch's images.

use candle_core::{DType, Device, Module, Tensor, Var, D};
use dexar_model::decoder::Decoder;
use dexar_model::nn::RmsNorm;

use crate::shapes::{Color, Scene, Shape};
use crate::vocab::token_id;
use crate::ToyError;

/// How the probe reads an image token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeReadout {
    /// Two throw-away linear heads (colour or background, shape or
    /// background) on the decoder's input.
    Linear,
    /// The decoder's own logit lens: the final norm, then the LM-head rows of
    /// the colour words and of the shape words (plus one learned background
    /// row each). Image tokens then say what they show in the words the
    /// answers use, as a pretrained LLaVA's image tokens partly do.
    #[default]
    Lens,
}

/// The decoder's final norm and LM head, and the colour and shape words.
struct LensReadout {
    norm: RmsNorm,
    /// `[V, D]`; its rows are gathered at every loss, as training moves them.
    lm_head: Tensor,
    color_ids: Tensor,
    shape_ids: Tensor,
}

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

/// Which object a patch is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchLabels {
    /// The object covering most of the patch, when it covers at least a
    /// quarter of it; slivers below that are left out.
    Cover,
    /// The object under the patch's centre (at least two of its four centre
    /// pixels), which is where a heatmap upsampled from the patch grid puts
    /// the patch's value; a patch whose centre is background is background
    /// even when an object's edge crosses it. An object holding no patch
    /// centre (a thin one) labels the patch it covers most.
    #[default]
    Centre,
}

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
    pub fn push_scene(&mut self, scene: &Scene, grid: usize, rule: PatchLabels) {
        match rule {
            PatchLabels::Cover => self.push_by_cover(scene, grid),
            PatchLabels::Centre => self.push_by_centre(scene, grid),
        }
    }

    fn push_by_centre(&mut self, scene: &Scene, grid: usize) {
        let (w, h) = scene.image.dimensions();
        let (pw, ph) = (w as usize / grid, h as usize / grid);
        let first = self.len();
        let mut labelled = vec![false; scene.objects.len()];
        // (pixels, patch) each object covers most, for the thin-object rule.
        let mut most: Vec<(usize, usize)> = vec![(0, 0); scene.objects.len()];
        for row in 0..grid {
            for col in 0..grid {
                let (cx, cy) = ((col * pw + pw / 2) as u32, (row * ph + ph / 2) as u32);
                let mut label = None;
                for (i, o) in scene.objects.iter().enumerate() {
                    let centre = [(0, 0), (1, 0), (0, 1), (1, 1)]
                        .iter()
                        .filter(|(dx, dy)| o.covers(cx - 1 + dx, cy - 1 + dy))
                        .count();
                    if centre >= 2 && label.is_none() {
                        label = Some(i);
                    }
                    let n = covered_pixels(o, row * ph..(row + 1) * ph, col * pw..(col + 1) * pw);
                    if n > most[i].0 {
                        most[i] = (n, row * grid + col);
                    }
                }
                let (color, shape) = match label {
                    Some(i) => {
                        labelled[i] = true;
                        let o = &scene.objects[i];
                        (o.color as usize, o.shape as usize)
                    }
                    None => (Color::ALL.len(), Shape::ALL.len()),
                };
                self.colors.push(color as u32);
                self.shapes.push(shape as u32);
                self.weights.push(1.0);
            }
        }
        for (i, o) in scene.objects.iter().enumerate() {
            if !labelled[i] && most[i].0 > 0 {
                let p = first + most[i].1;
                self.colors[p] = o.color as u32;
                self.shapes[p] = o.shape as u32;
            }
        }
    }

    fn push_by_cover(&mut self, scene: &Scene, grid: usize) {
        let (w, h) = scene.image.dimensions();
        let (pw, ph) = (w as usize / grid, h as usize / grid);
        let area = (pw * ph) as f32;
        for row in 0..grid {
            for col in 0..grid {
                let mut best: Option<(usize, usize)> = None; // (pixels, object)
                for (i, o) in scene.objects.iter().enumerate() {
                    let n = covered_pixels(o, row * ph..(row + 1) * ph, col * pw..(col + 1) * pw);
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

/// Pixels of `o` inside the patch spanning `rows` x `cols`.
fn covered_pixels(
    o: &crate::shapes::SceneObject,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> usize {
    rows.map(|y| {
        cols.clone()
            .filter(|&x| o.covers(x as u32, y as u32))
            .count()
    })
    .sum()
}

/// The probe's two heads: weights and biases of linear heads, or, with the
/// lens readout, the background rows (`[1, D]`) beside the LM-head rows.
pub(crate) struct PatchProbe {
    color: (Var, Var),
    shape: (Var, Var),
    lens: Option<LensReadout>,
    shaping: ProbeShaping,
}

/// How hard the probe's loss pushes the logits of a patch.
///
/// Plain cross-entropy never stops widening the margin of a patch already
/// classified right, so patches with the strongest local evidence (an
/// object's edge, for a shape) end with the largest logits, and it leaves the
/// common level of a patch's logits free: a background patch may read
/// "triangle" high as long as its background row reads higher. DEX-AR's map
/// is the named word's own logit, so both show in it; nor does it ask that
/// a word read highest on its own object across the image (the pointing
/// term). Measured (`TrainOptions::probe_shaping`), smoothing and z-loss did
/// not help DEX-AR's maps and are off by default (`Default` here is all off);
/// the pointing term made the unfiltered maps better in every run that kept
/// the probe on the decoder layers and DEX-AR's in some, and the bundled
/// model is trained with it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProbeShaping {
    /// Label smoothing `eps`: the target puts `1 - eps` on the patch's class
    /// and spreads `eps` evenly over all classes, so margins stop growing.
    pub label_smoothing: f32,
    /// Weight of the squared log-partition (`z-loss`): it pins the common
    /// level of a patch's logits near 0, so the word's own logit, not only
    /// its lead over the others, says whether the patch shows it.
    pub z_weight: f32,
    /// Weight of the pointing term: for every word an image shows (a colour
    /// or shape class some patch is labelled with), the cross-entropy over
    /// the image's patches of that word's logit, against all the patches
    /// labelled with it: `logsumexp_all(s) - logsumexp_labelled(s)`. It asks
    /// what DEX-AR's pointing game asks of a map, that the word reads highest
    /// on its own object's patches, which the per-patch terms leave free.
    pub pointing_weight: f32,
}

impl PatchProbe {
    /// Linear heads over `dim`-wide tokens, initialised like PyTorch's
    /// `nn.Linear`.
    pub fn new(dim: usize, seed: u64) -> Result<Self, ToyError> {
        Self::with_heads(dim, seed, COLOR_CLASSES, SHAPE_CLASSES, None)
    }

    /// The probe `readout` asks for; the lens reads through `decoder`'s own
    /// final norm and LM head, which the probe's loss then trains too.
    pub fn for_decoder(
        readout: ProbeReadout,
        decoder: &Decoder,
        seed: u64,
    ) -> Result<Self, ToyError> {
        let dim = decoder.cfg.hidden_size;
        if readout == ProbeReadout::Linear {
            return Self::new(dim, seed);
        }
        let ids = |words: Vec<&str>| -> Result<Tensor, ToyError> {
            let ids = words
                .iter()
                .map(|w| {
                    token_id(w).ok_or_else(|| ToyError::Options(format!("no token for {w:?}")))
                })
                .collect::<Result<Vec<u32>, _>>()?;
            Ok(Tensor::new(ids.as_slice(), decoder.lm_head.device())?)
        };
        let lens = LensReadout {
            norm: decoder.norm.clone(),
            lm_head: decoder.lm_head.clone(),
            color_ids: ids(Color::ALL.iter().map(|c| c.name()).collect())?,
            shape_ids: ids(Shape::ALL.iter().map(|s| s.name()).collect())?,
        };
        Self::with_heads(dim, seed, 1, 1, Some(lens))
    }

    fn with_heads(
        dim: usize,
        seed: u64,
        color_rows: usize,
        shape_rows: usize,
        lens: Option<LensReadout>,
    ) -> Result<Self, ToyError> {
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
            color: head(color_rows)?,
            shape: head(shape_rows)?,
            lens,
            shaping: ProbeShaping::default(),
        })
    }

    /// The same probe with `shaping` in its loss.
    pub fn with_shaping(mut self, shaping: ProbeShaping) -> Self {
        self.shaping = shaping;
        self
    }

    /// The probe's own weights (the lens readout's LM head and norm belong
    /// to the model).
    pub fn vars(&self) -> Vec<Var> {
        if self.lens.is_some() {
            return vec![self.color.0.clone(), self.shape.0.clone()];
        }
        vec![
            self.color.0.clone(),
            self.color.1.clone(),
            self.shape.0.clone(),
            self.shape.1.clone(),
        ]
    }

    /// Mean cross-entropy of the colour head plus that of the shape head over
    /// the weighted patches, with the [`ProbeShaping`] terms when set.
    /// `tokens` is `[I, N, D]`, the targets `I * N` long.
    pub fn loss(&self, tokens: &Tensor, targets: &PatchTargets) -> Result<Tensor, ToyError> {
        let (images, n, dim) = tokens.dims3()?;
        if images * n != targets.len() {
            return Err(ToyError::Options(format!(
                "{} patch targets for {images} x {n} image tokens",
                targets.len()
            )));
        }
        let mut flat = tokens.reshape((images * n, dim))?;
        if let Some(lens) = &self.lens {
            flat = lens.norm.forward(&flat)?;
        }
        let device = tokens.device();
        let weights = Tensor::new(targets.weights.as_slice(), device)?;
        let total = targets.weights.iter().sum::<f32>().max(1.0) as f64;
        let mut loss: Option<Tensor> = None;
        for ((w, b), labels, lens_rows) in [
            (
                &self.color,
                &targets.colors,
                self.lens.as_ref().map(|l| (&l.lm_head, &l.color_ids)),
            ),
            (
                &self.shape,
                &targets.shapes,
                self.lens.as_ref().map(|l| (&l.lm_head, &l.shape_ids)),
            ),
        ] {
            let logits = match lens_rows {
                // Word rows, then background, like the linear heads' classes.
                Some((lm_head, ids)) => {
                    let rows = Tensor::cat(&[&lm_head.index_select(ids, 0)?, w.as_tensor()], 0)?;
                    flat.matmul(&rows.t()?)?
                }
                None => flat
                    .matmul(&w.as_tensor().t()?)?
                    .broadcast_add(b.as_tensor())?,
            };
            let nll = row_loss(
                &logits,
                &Tensor::new(labels.as_slice(), device)?,
                self.shaping,
            )?;
            let mut head = ((nll * &weights)?.sum_all()? / total)?;
            if self.shaping.pointing_weight > 0.0 {
                let pointing =
                    pointing_loss(&logits.reshape((images, n, ()))?, labels, &targets.weights)?;
                head = (head + (pointing * f64::from(self.shaping.pointing_weight))?)?;
            }
            loss = Some(match loss {
                Some(l) => (l + head)?,
                None => head,
            });
        }
        loss.ok_or_else(|| ToyError::Options("probe without heads".into()))
    }
}

/// Per row `[R]`: `-log softmax(logits)[target]`, or with label smoothing
/// `eps` the cross-entropy against `(1 - eps) * onehot + eps / C`, plus
/// `z_weight * logsumexp(logits)^2`.
fn row_loss(
    logits: &Tensor,
    targets: &Tensor,
    shaping: ProbeShaping,
) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let mut picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    let eps = f64::from(shaping.label_smoothing);
    if eps > 0.0 {
        let spread = shifted.mean_keepdim(D::Minus1)?;
        picked = ((picked * (1.0 - eps))? + (spread * eps)?)?;
    }
    let mut loss = (&log_z - picked)?;
    if shaping.z_weight > 0.0 {
        let z = (log_z + max)?;
        loss = (loss + (z.sqr()? * f64::from(shaping.z_weight))?)?;
    }
    loss.squeeze(1)
}

/// Added to a logit to leave it out of a logsumexp (finite, so that left-out
/// terms and absent words stay NaN-free and get exactly zero gradient).
const LEFT_OUT: f32 = -1e4;

/// The pointing term of [`ProbeShaping::pointing_weight`], averaged over the
/// (image, word) pairs present. `logits` is `[I, N, C]`, the last class
/// background (never a target); `labels` and `weights` are `I * N` long;
/// patches of weight 0 are left out of both sets.
fn pointing_loss(logits: &Tensor, labels: &[u32], weights: &[f32]) -> candle_core::Result<Tensor> {
    let (images, n, classes) = logits.dims3()?;
    let words = classes - 1;
    // Per patch: LEFT_OUT unless it is in the loss (`left_out`), and per
    // word, unless it is in the loss and labelled with that word (`outside`).
    let mut left_out = vec![LEFT_OUT; images * n];
    let mut outside = vec![LEFT_OUT; images * n * words];
    let mut present = vec![0f32; images * words];
    for (p, (&label, &w)) in labels.iter().zip(weights).enumerate() {
        let k = label as usize;
        if w > 0.0 {
            left_out[p] = 0.0;
            if k < words {
                outside[p * words + k] = 0.0;
                present[(p / n) * words + k] = 1.0;
            }
        }
    }
    let device = logits.device();
    let scores = logits.narrow(2, 0, words)?;
    let all = scores.broadcast_add(&Tensor::from_vec(left_out, (images, n, 1), device)?)?;
    let on = (&scores + Tensor::from_vec(outside, (images, n, words), device)?)?;
    let pairs = present.iter().sum::<f32>().max(1.0) as f64;
    let present = Tensor::from_vec(present, (images, 1, words), device)?;
    let per_pair = (logsumexp_over_patches(&all)? - logsumexp_over_patches(&on)?)?;
    (per_pair * present)?.sum_all()? / pairs
}

/// `log Σ_n exp(x[:, n, :])`, keeping the patch axis, with a detached shift.
fn logsumexp_over_patches(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(1)?.detach();
    x.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max
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
            t.push_scene(&scene, 8, PatchLabels::Cover);
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
    fn centre_labels_follow_the_patch_centres() {
        let config = SceneConfig::default().noise_free();
        let mut fallbacks = 0;
        for index in 0..40 {
            let scene = generate(&config, 3, index);
            let mut t = PatchTargets::default();
            t.push_scene(&scene, 8, PatchLabels::Centre);
            assert_eq!(t.len(), 64);
            assert!(t.weights.iter().all(|&w| w == 1.0), "no patch is left out");
            for p in 0..64 {
                let (row, col) = (p / 8, p % 8);
                let (cx, cy) = (col as u32 * 8 + 4, row as u32 * 8 + 4);
                let centre = |o: &crate::shapes::SceneObject| {
                    [(0, 0), (1, 0), (0, 1), (1, 1)]
                        .iter()
                        .filter(|(dx, dy)| o.covers(cx - 1 + dx, cy - 1 + dy))
                        .count()
                        >= 2
                };
                match scene.objects.iter().find(|o| centre(o)) {
                    Some(o) => {
                        assert_eq!((t.colors[p], t.shapes[p]), (o.color as u32, o.shape as u32))
                    }
                    None if t.colors[p] == 8 => assert_eq!(t.shapes[p], 6),
                    None => {
                        // Only a thin object with no centre of its own may
                        // label a patch whose centre is background.
                        let o = scene
                            .objects
                            .iter()
                            .find(|o| o.color as u32 == t.colors[p])
                            .expect("a colour of the scene");
                        assert_eq!(t.shapes[p], o.shape as u32);
                        assert!(!(0..64).any(|q| q != p
                            && t.colors[q] == o.color as u32
                            && t.shapes[q] == o.shape as u32));
                        fallbacks += 1;
                    }
                }
            }
            for o in &scene.objects {
                assert!(
                    (0..64).any(|p| t.colors[p] == o.color as u32 && t.shapes[p] == o.shape as u32),
                    "{} {} has no patch",
                    o.color.name(),
                    o.shape.name()
                );
            }
        }
        assert!(fallbacks < 10, "{fallbacks} thin objects in 40 scenes");
    }

    fn probe_tokens() -> (Tensor, PatchTargets) {
        // Two images of three patches; the second shows one colour and one
        // shape on two patches, and colour 8 and shape 6 are background.
        let tokens = Tensor::new(
            &[
                [
                    [0.5f32, -1.0, 2.0, 0.0],
                    [1.0, 1.0, -0.5, 0.25],
                    [0.0, 3.0, 0.0, -1.0],
                ],
                [
                    [-0.5, 0.5, 1.5, 1.0],
                    [2.0, -1.0, 0.5, -0.5],
                    [0.25, 0.0, -2.0, 1.5],
                ],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let targets = PatchTargets {
            colors: vec![2, 8, 5, 2, 2, 8],
            shapes: vec![1, 6, 3, 4, 6, 4],
            weights: vec![1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        };
        (tokens, targets)
    }

    /// Plain loops: per head the weighted mean over patches of the smoothed
    /// cross-entropy plus the z-loss, plus the pointing term's mean over the
    /// (image, word) pairs present, summed over the two heads.
    fn loop_loss(probe: &PatchProbe, tokens: &Tensor, targets: &PatchTargets) -> f64 {
        let (_, n, dim) = tokens.dims3().unwrap();
        let rows: Vec<Vec<f32>> = tokens.reshape(((), dim)).unwrap().to_vec2().unwrap();
        let ProbeShaping {
            label_smoothing: eps,
            z_weight,
            pointing_weight,
        } = probe.shaping;
        let total: f32 = targets.weights.iter().sum();
        let mut expected = 0.0f64;
        for (head, labels) in [
            (&probe.color, &targets.colors),
            (&probe.shape, &targets.shapes),
        ] {
            let w: Vec<Vec<f32>> = head.0.as_tensor().to_vec2().unwrap();
            let b: Vec<f32> = head.1.as_tensor().to_vec1().unwrap();
            let all_logits: Vec<Vec<f64>> = rows
                .iter()
                .map(|row| {
                    w.iter()
                        .zip(&b)
                        .map(|(wc, bc)| {
                            f64::from(wc.iter().zip(row).map(|(a, x)| a * x).sum::<f32>() + bc)
                        })
                        .collect()
                })
                .collect();
            let lse_of = |values: Vec<f64>| values.iter().map(|l| l.exp()).sum::<f64>().ln();
            let (mut pointing, mut pairs) = (0.0f64, 0usize);
            for image in 0..rows.len() / n {
                let patches: Vec<usize> = (image * n..(image + 1) * n)
                    .filter(|&p| targets.weights[p] > 0.0)
                    .collect();
                // The words the image shows (the last class is background).
                let mut shown: Vec<usize> = patches
                    .iter()
                    .map(|&p| labels[p] as usize)
                    .filter(|&k| k + 1 < w.len())
                    .collect();
                shown.sort_unstable();
                shown.dedup();
                for k in shown {
                    let on: Vec<usize> = patches
                        .iter()
                        .copied()
                        .filter(|&p| labels[p] as usize == k)
                        .collect();
                    pairs += 1;
                    pointing += lse_of(patches.iter().map(|&p| all_logits[p][k]).collect())
                        - lse_of(on.iter().map(|&p| all_logits[p][k]).collect());
                }
            }
            expected += f64::from(pointing_weight) * pointing / pairs.max(1) as f64;
            for (r, logits) in all_logits.iter().enumerate() {
                let lse = lse_of(logits.clone());
                let classes = logits.len() as f64;
                let mut row_loss = 0.0;
                for (c, l) in logits.iter().enumerate() {
                    let mut target = f64::from(eps) / classes;
                    if c == labels[r] as usize {
                        target += 1.0 - f64::from(eps);
                    }
                    row_loss -= target * (l - lse);
                }
                row_loss += f64::from(z_weight) * lse * lse;
                expected += f64::from(targets.weights[r]) * row_loss / f64::from(total);
            }
        }
        expected
    }

    #[test]
    fn loss_is_the_weighted_mean_cross_entropy_of_both_heads() {
        let (tokens, targets) = probe_tokens();
        for (label_smoothing, z_weight, pointing_weight) in [
            (0.0, 0.0, 0.0),
            (0.1, 0.0, 0.0),
            (0.0, 0.05, 0.0),
            (0.0, 0.0, 0.7),
            (0.2, 0.1, 0.5),
        ] {
            let probe = PatchProbe::new(4, 1).unwrap().with_shaping(ProbeShaping {
                label_smoothing,
                z_weight,
                pointing_weight,
            });
            let got = probe
                .loss(&tokens, &targets)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let expected = loop_loss(&probe, &tokens, &targets);
            assert!(
                (f64::from(got) - expected).abs() < 1e-5,
                "eps {label_smoothing} z {z_weight} pointing {pointing_weight}: {got} vs {expected}"
            );
        }
        let probe = PatchProbe::new(4, 1).unwrap();
        let short = PatchTargets {
            colors: vec![0],
            shapes: vec![0],
            weights: vec![1.0],
        };
        assert!(probe.loss(&tokens, &short).is_err());
    }

    /// The shaped loss's gradient (its max is detached inside) against
    /// central differences of the plain-loop loss.
    #[test]
    fn shaped_loss_gradient_matches_finite_differences() {
        let (tokens, targets) = probe_tokens();
        let probe = PatchProbe::new(4, 1).unwrap().with_shaping(ProbeShaping {
            label_smoothing: 0.2,
            z_weight: 0.1,
            pointing_weight: 0.5,
        });
        let var = Var::from_tensor(&tokens).unwrap();
        let grads = probe
            .loss(var.as_tensor(), &targets)
            .unwrap()
            .backward()
            .unwrap();
        let grad: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let values: Vec<f32> = tokens.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-2f32;
        for (i, g) in grad.iter().enumerate() {
            let at = |d: f32| {
                let mut v = values.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, tokens.shape(), &Device::Cpu).unwrap();
                loop_loss(&probe, &t, &targets)
            };
            let numeric = (at(h) - at(-h)) / (2.0 * f64::from(h));
            assert!(
                (f64::from(*g) - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
                "token value {i}: autograd {g} vs central difference {numeric}"
            );
        }
        // Weighted-out patch 1 gets no gradient.
        assert!(grad[4..8].iter().all(|g| *g == 0.0));
    }

    /// The lens readout: final norm, then the LM-head rows of the colour
    /// (shape) words and the background row, checked with plain loops; its
    /// loss trains the LM head.
    #[test]
    fn lens_readout_is_the_logit_lens_over_the_attribute_words() {
        use crate::model_config::ToyModelConfig;
        use candle_nn::VarBuilder;
        use dexar_model::{LlavaConfig, LlavaModel};

        let sizes = ToyModelConfig::tiny();
        let config = LlavaConfig::from_value(&sizes.config_json()).unwrap();
        let varmap = crate::train::init_weights(&sizes, &config, 3, 0.3, &Device::Cpu).unwrap();
        let model = LlavaModel::load(
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            &config,
        )
        .unwrap();
        let decoder = &model.decoder;
        let dim = decoder.cfg.hidden_size;
        let values: Vec<f32> = (0..3 * dim)
            .map(|i| ((i * 7919) % 23) as f32 / 5.0 - 2.0)
            .collect();
        let tokens = Tensor::from_vec(values.clone(), (1, 3, dim), &Device::Cpu).unwrap();
        let targets = PatchTargets {
            colors: vec![2, 8, 5],
            shapes: vec![6, 1, 3],
            weights: vec![1.0, 1.0, 0.0],
        };
        let lm_head: Vec<Vec<f32>> = decoder.lm_head.to_vec2().unwrap();
        let gain: Vec<f32> = decoder.norm.weight.to_vec1().unwrap();
        let eps = decoder.norm.eps as f32;
        let row_of = |word: &str| lm_head[token_id(word).unwrap() as usize].clone();
        let expected_loss = |probe: &PatchProbe| -> f32 {
            let background =
                |head: &(Var, Var)| -> Vec<Vec<f32>> { head.0.as_tensor().to_vec2().unwrap() };
            let color_rows: Vec<Vec<f32>> = Color::ALL
                .iter()
                .map(|c| row_of(c.name()))
                .chain(background(&probe.color))
                .collect();
            let shape_rows: Vec<Vec<f32>> = Shape::ALL
                .iter()
                .map(|s| row_of(s.name()))
                .chain(background(&probe.shape))
                .collect();
            let mut expected = 0.0f32;
            for (r, x) in values.chunks(dim).enumerate() {
                let rms = (x.iter().map(|v| v * v).sum::<f32>() / dim as f32 + eps).sqrt();
                let normed: Vec<f32> = x.iter().zip(&gain).map(|(v, g)| v / rms * g).collect();
                for (rows, label) in [
                    (&color_rows, targets.colors[r]),
                    (&shape_rows, targets.shapes[r]),
                ] {
                    let logits: Vec<f32> = rows
                        .iter()
                        .map(|w| w.iter().zip(&normed).map(|(a, b)| a * b).sum())
                        .collect();
                    let log_z = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
                    let nll = log_z - logits[label as usize];
                    expected += targets.weights[r] * nll / 2.0;
                }
            }
            expected
        };
        let probe = PatchProbe::for_decoder(ProbeReadout::Lens, decoder, 1).unwrap();
        assert_eq!(
            probe.vars().len(),
            2,
            "only the background rows are the probe's"
        );
        let loss = probe.loss(&tokens, &targets).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        let expected = expected_loss(&probe);
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");

        let grads = loss.backward().unwrap();
        let head_grad = grads.get(&decoder.lm_head).expect("the LM head is trained");
        let red = head_grad
            .get(token_id(Color::ALL[2].name()).unwrap() as usize)
            .unwrap();
        assert!(
            red.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        let unused = head_grad.get(crate::vocab::EOS_ID as usize).unwrap();
        assert_eq!(
            unused
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
}
