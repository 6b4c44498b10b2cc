/*
 * dexar_plugin.h: the C ABI of dexar attribution plugins, version 1.1.
 *
 * Kept in sync by hand with crates/dexar-plugin/src/abi.rs; the dexar-plugin
 * test `header_matches_rust` compiles this header and compares every size and
 * field offset with the Rust definitions.
 *
 * A plugin is a shared library exporting these two functions:
 *
 *   uint32_t dexar_plugin_abi_version(void);
 *       Called first. Must return DEXAR_PLUGIN_ABI_VERSION. A library built
 *       for another version is refused before anything else is called.
 *
 *   const DexarPluginDescriptor *dexar_plugin_entry(void);
 *       Called once after the handshake. The descriptor and its strings must
 *       stay valid while the library is loaded (a static is the natural choice).
 *
 * and optionally
 *
 *   uint32_t dexar_plugin_abi_minor(void);
 *       The minor version the plugin was written for: return
 *       DEXAR_PLUGIN_ABI_MINOR (1) to be given images of several regions
 *       (tiles and a global view, DexarTraceView.regions). A plugin without
 *       it is ABI 1.0: it keeps working on images of one region, and the host
 *       refuses to call it on an image of several regions (naming both
 *       versions), because its map would cover only the first one.
 *
 * Rules:
 *   - All buffers are owned by the host; never free or keep them after a call.
 *   - Report failures by returning a non-zero DEXAR_STATUS_* and writing a
 *     message with dexar_set_error(); never abort or exit. A crash (segfault,
 *     abort) in C code takes the host process down: it cannot be contained.
 *   - Functions may be called from several threads at once: keep them free of
 *     unsynchronised global state.
 *   - The host measures each call against a time budget and discards results
 *     that arrive too late, but it cannot interrupt a call: do not block.
 *   - NaN or infinite outputs are rejected by the host.
 *
 * Build: cc -shared -fPIC -O2 -I<this dir> my_plugin.c -o libmy_plugin.so
 */
#ifndef DEXAR_PLUGIN_H
#define DEXAR_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DEXAR_PLUGIN_ABI_VERSION 1
#define DEXAR_PLUGIN_ABI_MINOR 1

/* Status codes returned by plugin functions. */
#define DEXAR_STATUS_OK 0
#define DEXAR_STATUS_ERROR 1
#define DEXAR_STATUS_PANIC 2 /* used by the Rust SDK for caught panics */

/* Position kinds (DEXAR.md: V, C, Y). */
#define DEXAR_KIND_IMAGE 0
#define DEXAR_KIND_PROMPT 1
#define DEXAR_KIND_GENERATED 2

/*
 * A read-only float tensor of shape [layers, heads, positions]. Element
 * (s, i, j) is data[s * strides[0] + i * strides[1] + j * strides[2]]
 * (strides in elements, not bytes). Honour the strides: do not assume
 * contiguous data.
 */
typedef struct DexarTensor3 {
    const float *data;
    size_t shape[3];
    size_t strides[3];
} DexarTensor3;

/* Region kinds (ABI 1.1). */
#define DEXAR_REGION_GLOBAL 0 /* the whole image, possibly downscaled */
#define DEXAR_REGION_TILE 1   /* one tile of a split image */

/* One block of image tokens (ABI 1.1): its span among the key positions, its
 * grid (cells are the LAST grid_height*grid_width positions of the span) and
 * the box [x0, y0, x1, y1] it covers on the image, normalised to [0, 1]. */
typedef struct DexarRegion {
    size_t start;
    size_t end;
    size_t grid_height;
    size_t grid_width;
    float bbox[4];
    uint32_t kind; /* DEXAR_REGION_* */
} DexarRegion;

/* One generation step: the query-row gradients and attention of every chosen
 * layer and head over all key positions (DEXAR.md "Per-step signal"). */
typedef struct DexarTraceView {
    DexarTensor3 grads;     /* g^{l,t,i}[j] = d o^{l,t}[y_t] / d A^{l,i}[q, j] */
    DexarTensor3 attn;      /* A^{l,i}[q, j], same shape as grads */
    const size_t *layers;   /* absolute layer index per slot, grads.shape[0] entries */
    const uint8_t *kinds;   /* DEXAR_KIND_* per position, grads.shape[2] entries */
    size_t image_start;     /* image positions of the first region: [image_start, image_end) */
    size_t image_end;
    size_t grid_height;     /* its patch grid, row-major; its cells are the LAST */
    size_t grid_width;      /* grid_height*grid_width positions of the image span */
    uint32_t token_id;      /* the explained token y_t */
    const char *token_text; /* UTF-8, token_text_len bytes, NUL follows */
    size_t token_text_len;
    size_t step;            /* index t of the token in the answer */
    size_t query_position;  /* q */
    /* ABI 1.1 (read only if you export dexar_plugin_abi_minor): every region
     * in sequence order, the first one that of the fields above. The token
     * map then holds one value per grid cell of every region, region after
     * region (out_len is their sum). */
    const DexarRegion *regions;
    size_t num_regions;
} DexarTraceView;

/* Per-token results handed to a sentence aggregate. */
typedef struct DexarSentenceView {
    const float *maps;    /* num_tokens maps, contiguous, grid_height*grid_width each */
    const float *weights; /* num_tokens token weights */
    size_t num_tokens;
    size_t grid_height;
    size_t grid_width;
} DexarSentenceView;

/* One token's map into out_map (out_len floats, zeroed by the host) and its
 * weight into *out_weight (1.0 on entry). */
typedef int32_t (*DexarTokenMapFn)(const DexarTraceView *trace, float *out_map,
                                   size_t out_len, float *out_weight, char *err,
                                   size_t err_cap);

/* Sentence map from the per-token maps into out_map (out_len floats, zeroed by
 * the host). Return it un-normalised: the host min-max normalises it. */
typedef int32_t (*DexarSentenceMapFn)(const DexarSentenceView *tokens,
                                      float *out_map, size_t out_len, char *err,
                                      size_t err_cap);

typedef struct DexarPluginDescriptor {
    uint32_t abi_version;            /* DEXAR_PLUGIN_ABI_VERSION */
    const char *name;                /* unique strategy name: 1-64 bytes, no whitespace, / or \, not starting with . */
    const char *version;             /* free-form */
    const char *help;                /* one line */
    DexarTokenMapFn token_map;       /* required */
    DexarSentenceMapFn sentence_map; /* optional: NULL means minmax(sum_t w_t*map_t) */
} DexarPluginDescriptor;

uint32_t dexar_plugin_abi_version(void);
uint32_t dexar_plugin_abi_minor(void); /* optional, ABI 1.1 */
const DexarPluginDescriptor *dexar_plugin_entry(void);

/* Element (slot, head, position) of a trace tensor. */
static inline float dexar_at(const DexarTensor3 *t, size_t slot, size_t head,
                             size_t position) {
    return t->data[slot * t->strides[0] + head * t->strides[1] +
                   position * t->strides[2]];
}

/* First position of the grid cells (the image span without a CLS token). */
static inline size_t dexar_grid_start(const DexarTraceView *trace) {
    return trace->image_end - trace->grid_height * trace->grid_width;
}

/* Writes a NUL-terminated message into the host's error buffer, truncated. */
static inline void dexar_set_error(char *err, size_t err_cap, const char *message) {
    size_t len;
    if (err == NULL || err_cap == 0) {
        return;
    }
    len = strlen(message);
    if (len > err_cap - 1) {
        len = err_cap - 1;
    }
    memcpy(err, message, len);
    err[len] = '\0';
}

#ifdef __cplusplus
}
#endif

#endif /* DEXAR_PLUGIN_H */
