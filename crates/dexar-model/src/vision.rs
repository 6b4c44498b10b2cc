//! The CLIP and SigLIP ViT vision towers (one transformer, two embeddings
//! and norms) and LLaVA's multi-modal projector.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{FeatureSelect, LlavaConfig, VisionConfig};
use crate::nn::{softmax_last, Activation, LayerNorm, Linear};

#[derive(Debug, Clone)]
struct VisionAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl VisionAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| {
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let probs = softmax_last(&q.matmul(&k.t()?.contiguous()?)?)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.out.forward(&ctx)
    }
}

/// One pre-norm ViT encoder layer under CLIP's weight names (SigLIP's are the same).
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    attn: VisionAttention,
    ln1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ln2: LayerNorm,
    act: Activation,
}

impl EncoderLayer {
    /// Layer `l` (`encoder.layers.N`) of a tower of configuration `cfg`.
    pub(crate) fn load(l: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let act = Activation::from_name(&cfg.hidden_act).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "vision hidden_act `{}` is not supported",
                cfg.hidden_act
            ))
        })?;
        let a = l.pp("self_attn");
        Ok(EncoderLayer {
            attn: VisionAttention {
                q: Linear::load(a.pp("q_proj"), d, d, true)?,
                k: Linear::load(a.pp("k_proj"), d, d, true)?,
                v: Linear::load(a.pp("v_proj"), d, d, true)?,
                out: Linear::load(a.pp("out_proj"), d, d, true)?,
                heads: cfg.num_attention_heads,
            },
            ln1: LayerNorm::load(l.pp("layer_norm1"), d, cfg.layer_norm_eps)?,
            fc1: Linear::load(l.pp("mlp").pp("fc1"), d, cfg.intermediate_size, true)?,
            fc2: Linear::load(l.pp("mlp").pp("fc2"), cfg.intermediate_size, d, true)?,
            ln2: LayerNorm::load(l.pp("layer_norm2"), d, cfg.layer_norm_eps)?,
            act,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?)?)?;
        let h = self
            .fc2
            .forward(&self.act.apply(&self.fc1.forward(&self.ln2.forward(&x)?)?)?)?;
        x + h
    }
}

/// A ViT vision tower (`vision_tower.vision_model.*`): CLIP's (a class
/// token, a norm before the layers, no patch bias) or SigLIP's (no class
/// token, a patch bias, a norm after the layers).
#[derive(Debug, Clone)]
pub struct VisionTower {
    cfg: VisionConfig,
    class_embedding: Option<Tensor>,
    /// Patch embedding as a `[hidden, channels * patch * patch]` matrix
    /// (the checkpoint's conv kernel, flattened: a stride-p conv is a matmul on patches).
    patch_weight: Tensor,
    patch_bias: Option<Tensor>,
    position_embedding: Tensor,
    pre_norm: Option<LayerNorm>,
    post_norm: Option<LayerNorm>,
    layers: Vec<EncoderLayer>,
}

impl VisionTower {
    /// Loads a CLIP tower with the layers needed for hidden state
    /// `max_hidden_index` (0 = embeddings).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig, max_hidden_index: usize) -> Result<Self> {
        let d = cfg.hidden_size;
        let n = cfg.grid_side() * cfg.grid_side();
        let emb = vb.pp("embeddings");
        Ok(Self {
            class_embedding: Some(emb.get(d, "class_embedding")?),
            patch_weight: patch_matrix(&emb.pp("patch_embedding"), cfg)?,
            patch_bias: None,
            position_embedding: emb.pp("position_embedding").get((n + 1, d), "weight")?,
            // (sic) the checkpoint spells it "pre_layrnorm"
            pre_norm: Some(LayerNorm::load(
                vb.pp("pre_layrnorm"),
                d,
                cfg.layer_norm_eps,
            )?),
            post_norm: None,
            layers: Self::load_layers(&vb, cfg, max_hidden_index)?,
            cfg: cfg.clone(),
        })
    }

    /// Loads a SigLIP tower (PaliGemma's, and SmolVLM's on whole tiles of
    /// its `image_size`, where every patch is present and the position ids
    /// are 0..N in order): every layer and the final norm
    /// ([`Self::last_hidden_state`] is its output).
    pub fn load_siglip(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let n = cfg.grid_side() * cfg.grid_side();
        let emb = vb.pp("embeddings");
        Ok(Self {
            class_embedding: None,
            patch_weight: patch_matrix(&emb.pp("patch_embedding"), cfg)?,
            patch_bias: Some(emb.pp("patch_embedding").get(d, "bias")?),
            position_embedding: emb.pp("position_embedding").get((n, d), "weight")?,
            pre_norm: None,
            post_norm: Some(LayerNorm::load(
                vb.pp("post_layernorm"),
                d,
                cfg.layer_norm_eps,
            )?),
            layers: Self::load_layers(&vb, cfg, cfg.num_hidden_layers)?,
            cfg: cfg.clone(),
        })
    }

    /// The first `count` encoder layers.
    fn load_layers(vb: &VarBuilder, cfg: &VisionConfig, count: usize) -> Result<Vec<EncoderLayer>> {
        let enc = vb.pp("encoder").pp("layers");
        (0..count.min(cfg.num_hidden_layers))
            .map(|i| EncoderLayer::load(enc.pp(i), cfg))
            .collect()
    }

    /// Hidden states `[embeddings, after layer 1, ...]` up to `max_index`,
    /// each `[B, 1+N, D]` (CLIP) or `[B, N, D]` (SigLIP).
    pub fn hidden_states(&self, pixels: &Tensor, max_index: usize) -> Result<Vec<Tensor>> {
        let b = pixels.dim(0)?;
        let mut patch_emb = embed_patches(pixels, &self.patch_weight, self.cfg.patch_size)?;
        if let Some(bias) = &self.patch_bias {
            patch_emb = patch_emb.broadcast_add(bias)?;
        }
        let d = self.cfg.hidden_size;
        let x = match &self.class_embedding {
            Some(c) => Tensor::cat(
                &[c.reshape((1, 1, d))?.broadcast_as((b, 1, d))?, patch_emb],
                1,
            )?,
            None => patch_emb,
        };
        let x = x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut x = match &self.pre_norm {
            Some(norm) => norm.forward(&x)?,
            None => x,
        };
        let mut states = vec![x.clone()];
        for layer in self.layers.iter().take(max_index) {
            x = layer.forward(&x)?;
            states.push(x.clone());
        }
        Ok(states)
    }

    /// The output of every layer with the final norm (SigLIP's
    /// `last_hidden_state`), `[B, N, D]`.
    pub fn last_hidden_state(&self, pixels: &Tensor) -> Result<Tensor> {
        let states = self.hidden_states(pixels, self.layers.len())?;
        let last = states
            .last()
            .ok_or_else(|| candle_core::Error::Msg("the vision tower has no output".into()))?;
        match &self.post_norm {
            Some(norm) => norm.forward(last),
            None => Ok(last.clone()),
        }
    }
}

/// A patch-embedding conv kernel (`weight` `[D, C, p, p]`) as a
/// `[D, C * p * p]` matrix: a stride-p conv is a matmul on patches.
pub(crate) fn patch_matrix(vb: &VarBuilder, cfg: &VisionConfig) -> Result<Tensor> {
    let (d, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
    vb.get((d, c, p, p), "weight")?.reshape((d, c * p * p))
}

/// `[B, C, H, W]` pixels to `[B, (H/p)(W/p), D]` patch embeddings, row-major
/// over the patch grid (no bias).
pub(crate) fn embed_patches(pixels: &Tensor, weight: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = pixels.dims4()?;
    let (gh, gw) = (h / p, w / p);
    // [B, C, gh, p, gw, p] -> [B, gh, gw, C, p, p] -> [B, N, C*p*p]
    let patches = pixels
        .reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b, gh * gw, c * p * p))?;
    patches
        .to_dtype(weight.dtype())?
        .broadcast_matmul(&weight.t()?)
}

/// Vision tower + feature selection + 2-layer projector: pixels to image tokens.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    pub tower: VisionTower,
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
    feature_indices: Vec<usize>,
    select: FeatureSelect,
}

impl ImageEncoder {
    pub fn load(tower_vb: VarBuilder, projector_vb: VarBuilder, cfg: &LlavaConfig) -> Result<Self> {
        let nl = cfg.vision.num_hidden_layers as i64;
        let feature_indices: Vec<usize> = cfg
            .vision_feature_layers
            .iter()
            .map(|&k| {
                if k < 0 {
                    (nl + 1 + k) as usize
                } else {
                    k as usize
                }
            })
            .collect();
        let max_index = feature_indices.iter().copied().max().unwrap_or(0);
        let tower = VisionTower::load(tower_vb.pp("vision_model"), &cfg.vision, max_index)?;
        let in_dim = cfg.vision.hidden_size * feature_indices.len();
        let d = cfg.text.hidden_size;
        let act = Activation::from_name(&cfg.projector_hidden_act).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "projector_hidden_act `{}` is not supported",
                cfg.projector_hidden_act
            ))
        })?;
        Ok(Self {
            tower,
            linear_1: Linear::load(projector_vb.pp("linear_1"), in_dim, d, true)?,
            linear_2: Linear::load(projector_vb.pp("linear_2"), d, d, true)?,
            act,
            feature_indices,
            select: cfg.vision_feature_select,
        })
    }

    /// `[B, 3, H, W]` normalised pixels to `[B, num_image_tokens, text_hidden]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let max_index = self.feature_indices.iter().copied().max().unwrap_or(0);
        let states = self.tower.hidden_states(pixels, max_index)?;
        let picked: Vec<Tensor> = self
            .feature_indices
            .iter()
            .map(|&i| states[i].clone())
            .collect();
        let mut feats = Tensor::cat(&picked, D::Minus1)?;
        if self.select == FeatureSelect::Default {
            let n = feats.dim(1)?;
            feats = feats.narrow(1, 1, n - 1)?;
        }
        self.linear_2
            .forward(&self.act.apply(&self.linear_1.forward(&feats)?)?)
    }
}
