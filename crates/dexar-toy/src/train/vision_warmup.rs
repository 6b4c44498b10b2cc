//! Stage 1: warming up the vision tower, as LLaVA starts from a pretrained
//! CLIP. On single-object scenes, the image tokens (tower and projector,
//! exactly as the decoder receives them) are max-pooled over patches and a
//! throw-away linear probe classifies the object's shape.
//! Max-pooling sends the signal to the patches that respond most, those of
//! the object, so the tokens learn *local* shape features: what
//! the decoder must later find by attention, and what DEX-AR points at.
//!
//! Why: trained on answers alone, a from-scratch tower learned colour
//! (linear in the pixels) and never shape, not in 20 k scenes; a colour head
//! or coloured-shape classes in this probe had the same effect. On shape
//! alone it learns in about 150 steps of 32 scenes.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use dexar_model::LlavaModel;

use crate::shapes::{generate, SceneConfig, Shape};
use crate::ToyError;

use super::batch::BatchMaker;

const SHAPES: usize = Shape::ALL.len();

/// Probe classes: the shapes. Colour is left out on purpose: it is linear
/// in the pixels and, whenever it was in the probe's loss (as its own head
/// or in coloured-shape classes), the pooled features filled up with colour
/// and shape was not learned at all. The answers teach colour anyway.
const CLASSES: usize = SHAPES;

/// Scenes of stage 1 come from their own stream of the training seed.
const VISION_STREAM: u64 = 0x7157_0a11;

/// The throw-away probe: a linear map from max-pooled image tokens to classes.
pub(crate) struct VisionProbe {
    weight: Var,
    bias: Var,
}

impl VisionProbe {
    pub fn new(model: &LlavaModel, seed: u64) -> Result<Self, ToyError> {
        let dim = model.config.text.hidden_size;
        let mut rng = crate::rng::SplitMix64::for_scene(seed, VISION_STREAM);
        // PyTorch's `nn.Linear` default: large enough for its gradient to
        // reach the tower from the first step.
        let a = 1.0 / (dim as f32).sqrt();
        let init: Vec<f32> = (0..CLASSES * dim)
            .map(|_| (rng.unit_f32() * 2.0 - 1.0) * a)
            .collect();
        Ok(Self {
            weight: Var::from_tensor(&Tensor::from_vec(init, (CLASSES, dim), &Device::Cpu)?)?,
            bias: Var::zeros(CLASSES, DType::F32, &Device::Cpu)?,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }

    /// Cross-entropy of the probe on single-object scenes `indices` of the
    /// stage-1 stream.
    pub fn loss(
        &self,
        model: &LlavaModel,
        data: &BatchMaker,
        scene_config: &SceneConfig,
        seed: u64,
        indices: std::ops::Range<u64>,
    ) -> Result<Tensor, ToyError> {
        let stream = seed ^ VISION_STREAM;
        // One object per scene: a plain classification, the fastest signal.
        let single = SceneConfig {
            min_objects: 1,
            max_objects: 1,
            ..scene_config.clone()
        };
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for index in indices {
            let scene = generate(&single, stream, index);
            pixels.push(data.pixels(&scene.image)?);
            let o = &scene.objects[0];
            labels.push(Shape::ALL.iter().position(|s| *s == o.shape).unwrap_or(0) as u32);
        }
        let pixels = Tensor::stack(&pixels, 0)?;
        // Image tokens as the decoder receives them, max-pooled per feature.
        let tokens = model.image_encoder.forward(&pixels)?; // [B, N, D]
        let logits = tokens
            .max(1)?
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?; // [B, C]
        Ok(cross_entropy(
            &logits,
            &Tensor::new(labels.as_slice(), &Device::Cpu)?,
        )?)
    }
}

/// Stage 1: the probe with an optimiser over the tower, projector and probe.
pub(crate) struct VisionWarmup {
    probe: VisionProbe,
    optimizer: AdamW,
}

impl VisionWarmup {
    pub fn new(probe: VisionProbe, tower_vars: Vec<Var>, lr: f64) -> Result<Self, ToyError> {
        let mut vars = tower_vars;
        vars.extend(probe.vars());
        let optimizer = AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Self { probe, optimizer })
    }

    /// One optimiser step; returns the loss.
    pub fn step(
        &mut self,
        model: &LlavaModel,
        data: &BatchMaker,
        scene_config: &SceneConfig,
        seed: u64,
        indices: std::ops::Range<u64>,
        lr: f64,
    ) -> Result<f32, ToyError> {
        let loss = self.probe.loss(model, data, scene_config, seed, indices)?;
        self.optimizer.set_learning_rate(lr);
        self.optimizer.step(&loss.backward()?)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    pub fn into_probe(self) -> VisionProbe {
        self.probe
    }
}

/// Mean of `-log softmax(logits)[target]` over rows.
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    (log_z - picked)?.mean_all()
}
