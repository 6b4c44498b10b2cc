use super::*;
use crate::vocab::{chat_prompt, EOS_ID};
use crate::{generate, DESCRIBE_PROMPT};
use candle_core::IndexOp;
use dexar_model::decoder::Capture;
use dexar_model::{generate_traced, Checkpoint, GenerationSettings, LoadOptions, Mode, StopReason};
use std::sync::atomic::AtomicBool;

fn tiny_model() -> (LlavaConfig, VarMap, LlavaModel) {
    let sizes = ToyModelConfig::tiny();
    let config = LlavaConfig::from_value(&sizes.config_json()).expect("config");
    let varmap = init_weights(&sizes, &config, 7, 0.02, &Device::Cpu).expect("init");
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = LlavaModel::load(vb, &config).expect("the model loads from the VarMap");
    (config, varmap, model)
}

#[test]
fn schedule_warms_up_then_decays_to_the_floor() {
    let opts = TrainOptions {
        steps: 100,
        warmup_steps: 10,
        lr: 1e-3,
        final_lr_fraction: 0.1,
        ..TrainOptions::default()
    };
    assert!((opts.lr_at(1) - 1e-4).abs() < 1e-12);
    assert!((opts.lr_at(10) - 1e-3).abs() < 1e-12);
    assert!(opts.lr_at(50) < opts.lr_at(11));
    assert!((opts.lr_at(100) - 1e-4).abs() < 1e-12);
    let bad = TrainOptions {
        batch_size: 0,
        ..TrainOptions::default()
    };
    assert!(matches!(bad.validate(), Err(ToyError::Options(_))));
    let negative = TrainOptions {
        lens_weight: -1.0,
        ..TrainOptions::default()
    };
    assert!(matches!(negative.validate(), Err(ToyError::Options(m)) if m.contains("lens weight")));
    for (label_smoothing, z_weight, pointing_weight, word) in [
        (1.0, 0.0, 0.0, "label smoothing"),
        (-0.1, 0.0, 0.0, "label smoothing"),
        (0.1, f32::NAN, 0.0, "z-loss"),
        (0.0, -1.0, 0.0, "z-loss"),
        (0.0, 0.0, -0.5, "pointing"),
        (0.0, 0.0, f32::INFINITY, "pointing"),
    ] {
        let shaped = TrainOptions {
            probe_shaping: super::ProbeShaping {
                label_smoothing,
                z_weight,
                pointing_weight,
            },
            ..TrainOptions::default()
        };
        assert!(
            matches!(shaped.validate(), Err(ToyError::Options(ref m)) if m.contains(word)),
            "{label_smoothing} / {z_weight} / {pointing_weight}"
        );
    }
    let shaped = TrainOptions {
        probe_shaping: super::ProbeShaping {
            label_smoothing: 0.1,
            z_weight: 0.1,
            pointing_weight: 0.5,
        },
        ..TrainOptions::default()
    };
    assert!(shaped.validate().is_ok());
}

#[test]
fn initial_weights_depend_on_the_seed_only() {
    let sizes = ToyModelConfig::tiny();
    let config = LlavaConfig::from_value(&sizes.config_json()).expect("config");
    let get = |seed| {
        let varmap = init_weights(&sizes, &config, seed, 0.02, &Device::Cpu).expect("init");
        let data = varmap.data().lock().expect("lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let count: usize = data.values().map(|v| v.elem_count()).sum();
        assert_eq!(count, sizes.parameter_count(), "parameter_count is exact");
        data["language_model.model.layers.0.self_attn.q_proj.weight"]
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    };
    let a = get(3);
    assert_eq!(a, get(3));
    assert_ne!(a, get(4));
    let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.004, "std {std}");
}

/// The shared-prefix batch scores exactly what full, separate sequences
/// through the same decoder give.
#[test]
fn shared_prefix_loss_equals_full_sequence_loss() {
    let (config, _varmap, model) = tiny_model();
    let maker = BatchMaker::new(&config).expect("batch maker");
    let scene_config = SceneConfig::default();
    let batch = maker.batch(&scene_config, 5, 0..2).expect("batch");
    let losses = batch_loss(&model, &batch, true, true).expect("loss");
    assert_eq!(
        losses.layer_tokens.len(),
        1,
        "every decoder layer but the last"
    );
    let loss = losses.answers.to_scalar::<f32>().expect("scalar");
    assert_eq!(losses.tokens.dims3().expect("tokens"), (2, 16, 32));
    let lens = losses
        .lens
        .expect("lens loss")
        .to_scalar::<f32>()
        .expect("scalar");
    assert_eq!(
        batch.patches.len(),
        2 * 16,
        "one probe target per image token"
    );

    // Per token: the last layer's NLL and layer 0's logit-lens NLL (the
    // tiny decoder has two layers).
    let (mut nll, mut lens_nll) = (Vec::new(), Vec::new());
    for index in 0..2 {
        let scene = generate(&scene_config, 5, index);
        let img = image::DynamicImage::ImageRgb8(scene.image.clone());
        let pixels = maker.processor.preprocess(&img);
        let features = model.encode_image(&pixels).expect("features");
        for (prompt, answer) in scene.qa_pairs() {
            let (mut ids, span) = maker.prompt_ids(prompt).expect("prompt");
            let first = ids.len() - 1;
            ids.extend(maker.tokenizer.encode(&answer.text, false).expect("encode"));
            ids.push(EOS_ID);
            let x = model
                .decoder
                .embed_with_image(&ids, &[span], features.tensor())
                .expect("embed");
            let capture = Capture {
                layer_outputs: true,
                ..Capture::default()
            };
            let out = model
                .decoder
                .forward(&x, 0, None, &capture)
                .expect("forward");
            assert_eq!(out.layer_outputs.len(), 2);
            let hidden = out.hidden.expect("hidden").squeeze(0).expect("squeeze");
            let layer0 = out.layer_outputs[0].squeeze(0).expect("squeeze");
            // The image positions of layer 0's output, as the probe reads them.
            let batched = losses.layer_tokens[0].i(index as usize).expect("image");
            let full = layer0.narrow(0, span.0, span.1 - span.0).expect("span");
            let diff = (batched - full)
                .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
                .expect("diff");
            assert!(diff < 1e-5, "layer-0 image tokens differ by {diff}");
            for (h, sink) in [(&hidden, &mut nll), (&layer0, &mut lens_nll)] {
                let logits = model.decoder.logits(h).expect("logits");
                for j in first..ids.len() - 1 {
                    let row: Vec<f32> = logits.i(j).and_then(|r| r.to_vec1()).expect("row");
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let log_z = row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
                    sink.push(log_z - row[ids[j + 1] as usize]);
                }
            }
        }
    }
    let expected_lens = lens_nll.iter().sum::<f32>() / lens_nll.len() as f32;
    assert!(
        (lens - expected_lens).abs() < 1e-4 * expected_lens.abs().max(1.0),
        "batched logit-lens loss {lens} vs full sequences {expected_lens}"
    );
    assert_eq!(nll.len(), batch.scored_count);
    assert_eq!(batch.groups.len(), 2, "short and long suffixes");
    let expected = nll.iter().sum::<f32>() / nll.len() as f32;
    assert!(
        (loss - expected).abs() < 1e-4 * expected.abs().max(1.0),
        "batched {loss} vs full sequences {expected}"
    );
    // An untrained model is about uniform over the vocabulary.
    let uniform = (vocabulary_len() as f32).ln();
    assert!((loss - uniform).abs() < 0.5, "{loss} vs ln V = {uniform}");
}

fn vocabulary_len() -> usize {
    crate::vocabulary().len()
}

/// CI's training smoke test: loss falls over a few dozen steps of a very
/// small model, and the saved directory loads as a llava-hf checkpoint and
/// answers with traced greedy generation.
#[test]
fn smoke_training_lowers_the_loss_and_saves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = TrainOptions {
        vision_steps: 10,
        vision_batch_size: 4,
        steps: 40,
        batch_size: 2,
        lr: 3e-3,
        warmup_steps: 5,
        seed: 11,
        out_dir: dir.path().join("toy"),
        model: ToyModelConfig::tiny(),
        ..TrainOptions::default()
    };
    let mut seen = Vec::new();
    let report =
        train(&opts, &mut |p| seen.push((p.stage, p.step, p.steps))).expect("training runs");
    assert_eq!(seen.len(), 50);
    assert_eq!(seen[0], (TrainStage::Vision, 1, 50));
    assert_eq!(seen[10], (TrainStage::Answers, 11, 50));
    assert_eq!(report.vision_losses.len(), 10);
    assert_eq!(report.losses.len(), 40);
    let head = report.losses[..5].iter().sum::<f32>() / 5.0;
    let tail = report.losses[35..].iter().sum::<f32>() / 5.0;
    assert!(
        tail < 0.75 * head,
        "loss did not fall: {head} -> {tail} ({:?})",
        report.losses
    );
    assert_eq!(report.parameters, opts.model.parameter_count());
    // f32 weights plus the safetensors header.
    let data_bytes = 4 * report.parameters as u64;
    assert!((data_bytes..data_bytes + 16_384).contains(&report.weights_bytes));

    for file in CHECKPOINT_FILES {
        assert!(opts.out_dir.join(file).is_file(), "{file} written");
    }
    let ckpt = Checkpoint::load(&opts.out_dir, &LoadOptions::default()).expect("checkpoint loads");
    let scene = generate(&SceneConfig::default(), 99, 0);
    let features = ckpt
        .encode_image(&image::DynamicImage::ImageRgb8(scene.image))
        .expect("encode");
    let prompt = ckpt
        .tokenizer
        .prepare(
            &chat_prompt(DESCRIBE_PROMPT),
            ckpt.image_marker.token_id,
            features.num_tokens(),
        )
        .expect("prepare");
    let settings = GenerationSettings {
        max_tokens: 8,
        layers: 0..ckpt.text_config().num_hidden_layers,
        ..GenerationSettings::default()
    };
    let mut steps = 0;
    let generation = generate_traced(
        &ckpt,
        &prompt,
        &features,
        &settings,
        &Mode::Generate,
        &AtomicBool::new(false),
        &mut |step| {
            steps += 1;
            assert!(step.trace.validate().is_ok());
            true
        },
    )
    .expect("the trained checkpoint generates");
    assert!(matches!(
        generation.stop,
        StopReason::Eos | StopReason::MaxTokens
    ));
    assert_eq!(steps, generation.tokens.len());
    let vocab = crate::vocabulary();
    assert!(generation
        .tokens
        .iter()
        .all(|&t| (t as usize) < vocab.len()));
}

/// Where a step's time goes: `cargo test -p dexar-toy --lib profile_one_step
/// -- --ignored --nocapture` (with `CANDLE_NUM_THREADS=1` on a shared machine).
#[test]
#[ignore]
fn profile_one_step() {
    use std::time::Instant;
    let sizes = ToyModelConfig::demo();
    let config = LlavaConfig::from_value(&sizes.config_json()).unwrap();
    let varmap = init_weights(&sizes, &config, 1, 0.02, &Device::Cpu).unwrap();
    let model = LlavaModel::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &config,
    )
    .unwrap();
    let maker = BatchMaker::new(&config).unwrap();
    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW::default()).unwrap();
    for step in 0..6u64 {
        let t = Instant::now();
        let batch = maker
            .batch(&SceneConfig::default(), 1, step * 8..step * 8 + 8)
            .unwrap();
        let t_batch = t.elapsed();
        let t = Instant::now();
        let feats = model.image_encoder.forward(&batch.pixels).unwrap();
        let _ = feats.sum_all().unwrap().to_scalar::<f32>();
        let t_vis = t.elapsed();
        let t = Instant::now();
        let loss = batch_loss(&model, &batch, false, false).unwrap().answers;
        let _ = loss.to_scalar::<f32>();
        let t_fwd = t.elapsed();
        let t = Instant::now();
        let grads = loss.backward().unwrap();
        let t_bwd = t.elapsed();
        let t = Instant::now();
        opt.step(&grads).unwrap();
        let t_opt = t.elapsed();
        println!(
            "batch {:?} vision {:?} fwd(all) {:?} bwd {:?} opt {:?} suffix {:?}",
            t_batch,
            t_vis,
            t_fwd,
            t_bwd,
            t_opt,
            batch
                .groups
                .iter()
                .map(|g| g.ids.dims().to_vec())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn saved_weights_are_byte_for_byte_what_candle_writes() {
    // The bundled weights, read back and written again, give the same file.
    let dir = tempfile::tempdir().expect("tempdir");
    crate::export_bundled(dir.path()).expect("export");
    let path = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).expect("load");
    let bytes = super::safetensors_bytes(&tensors).expect("serialize");
    assert_eq!(bytes, std::fs::read(&path).expect("read"));
    let again = dir.path().join("again.safetensors");
    candle_core::safetensors::save(&tensors, &again).expect("save");
    assert_eq!(bytes, std::fs::read(&again).expect("read"));
}
