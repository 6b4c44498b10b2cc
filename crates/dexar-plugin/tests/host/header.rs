//! The C header and the Rust definitions describe the same ABI.

use crate::support::*;
use dexar_plugin::abi::*;
use std::mem::{offset_of, size_of};
use std::process::Command;

#[test]
fn header_matches_rust() {
    let mut expected = vec![
        (
            "DEXAR_PLUGIN_ABI_VERSION",
            DEXAR_PLUGIN_ABI_VERSION as usize,
        ),
        ("DEXAR_PLUGIN_ABI_MINOR", DEXAR_PLUGIN_ABI_MINOR as usize),
        ("DEXAR_REGION_GLOBAL", DEXAR_REGION_GLOBAL as usize),
        ("DEXAR_REGION_TILE", DEXAR_REGION_TILE as usize),
        ("sizeof(DexarRegion)", size_of::<DexarRegion>()),
        ("DEXAR_STATUS_OK", DEXAR_STATUS_OK as usize),
        ("DEXAR_STATUS_ERROR", DEXAR_STATUS_ERROR as usize),
        ("DEXAR_STATUS_PANIC", DEXAR_STATUS_PANIC as usize),
        ("DEXAR_KIND_IMAGE", DEXAR_KIND_IMAGE as usize),
        ("DEXAR_KIND_PROMPT", DEXAR_KIND_PROMPT as usize),
        ("DEXAR_KIND_GENERATED", DEXAR_KIND_GENERATED as usize),
        ("sizeof(DexarTensor3)", size_of::<DexarTensor3>()),
        ("sizeof(DexarTraceView)", size_of::<DexarTraceView>()),
        ("sizeof(DexarSentenceView)", size_of::<DexarSentenceView>()),
        (
            "sizeof(DexarPluginDescriptor)",
            size_of::<DexarPluginDescriptor>(),
        ),
    ];
    macro_rules! offsets {
        ($ty:ident: $($field:ident),*) => {
            $(expected.push((
                concat!("offsetof(", stringify!($ty), ", ", stringify!($field), ")"),
                offset_of!($ty, $field),
            ));)*
        };
    }
    offsets!(DexarTensor3: data, shape, strides);
    offsets!(DexarTraceView: grads, attn, layers, kinds, image_start, image_end, grid_height,
        grid_width, token_id, token_text, token_text_len, step, query_position, regions,
        num_regions);
    offsets!(DexarRegion: start, end, grid_height, grid_width, bbox, kind);
    offsets!(DexarSentenceView: maps, weights, num_tokens, grid_height, grid_width);
    offsets!(DexarPluginDescriptor: abi_version, name, version, help, token_map, sentence_map);

    let mut program = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"dexar_plugin.h\"\nint main(void) {\n",
    );
    for (expr, _) in &expected {
        program.push_str(&format!("    printf(\"%zu\\n\", (size_t)({expr}));\n"));
    }
    program.push_str("    return 0;\n}\n");

    let dir = private_dir();
    let source = dir.path().join("layout.c");
    let exe = dir.path().join("layout");
    std::fs::write(&source, program).unwrap();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(include_dir())
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("run cc");
    assert!(status.success(), "the header does not compile");
    let out = Command::new(&exe).output().expect("run layout program");
    let printed = String::from_utf8(out.stdout).unwrap();
    let values: Vec<usize> = printed.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(values.len(), expected.len());
    for ((expr, rust), c) in expected.iter().zip(values) {
        assert_eq!(*rust, c, "{expr}: Rust says {rust}, the C header says {c}");
    }
}
