/*
 * c-image-mass: a dexar plugin in plain C, against include/dexar_plugin.h.
 *
 * Token map: for every layer slot and head, the raw attention mass the query
 * puts on the image, m = sum_{j in image span} A[q, j], weights the rectified
 * gradient on the grid cells:  M[c] = sum_{l,i} m * ReLU(g[grid_start + c]).
 * Token weight: 1.
 *
 * Sentence map (the optional aggregate, to show how one is written): the
 * per-cell maximum over tokens of weight * map ("max-pool" instead of the
 * host's default sum). The host min-max normalises the result.
 *
 * Rules of the ABI (see the header): buffers belong to the host, errors are a
 * status plus a message, no global mutable state, never crash or block.
 */
#include "dexar_plugin.h"

static int32_t image_mass_token_map(const DexarTraceView *trace, float *out_map,
                                    size_t out_len, float *out_weight,
                                    char *err, size_t err_cap) {
    size_t layers = trace->grads.shape[0];
    size_t heads = trace->grads.shape[1];
    size_t grid_len = trace->grid_height * trace->grid_width;
    size_t grid_start, slot, head, j, cell;

    if (out_len != grid_len || grid_len > trace->image_end) {
        dexar_set_error(err, err_cap, "output map does not match the grid");
        return DEXAR_STATUS_ERROR;
    }
    grid_start = dexar_grid_start(trace);
    for (slot = 0; slot < layers; slot++) {
        for (head = 0; head < heads; head++) {
            float mass = 0.0f;
            for (j = trace->image_start; j < trace->image_end; j++) {
                mass += dexar_at(&trace->attn, slot, head, j);
            }
            for (cell = 0; cell < grid_len; cell++) {
                float g = dexar_at(&trace->grads, slot, head, grid_start + cell);
                if (g > 0.0f) {
                    out_map[cell] += mass * g;
                }
            }
        }
    }
    *out_weight = 1.0f;
    return DEXAR_STATUS_OK;
}

static int32_t image_mass_sentence_map(const DexarSentenceView *tokens,
                                       float *out_map, size_t out_len,
                                       char *err, size_t err_cap) {
    size_t cells = tokens->grid_height * tokens->grid_width;
    size_t t, cell;

    if (out_len != cells) {
        dexar_set_error(err, err_cap, "output map does not match the grid");
        return DEXAR_STATUS_ERROR;
    }
    for (t = 0; t < tokens->num_tokens; t++) {
        for (cell = 0; cell < cells; cell++) {
            float value = tokens->weights[t] * tokens->maps[t * cells + cell];
            if (t == 0 || value > out_map[cell]) {
                out_map[cell] = value;
            }
        }
    }
    return DEXAR_STATUS_OK;
}

static const DexarPluginDescriptor DESCRIPTOR = {
    DEXAR_PLUGIN_ABI_VERSION,
    "c-image-mass",
    "0.1.0",
    "Written in C: per-head attention mass on the image times rectified gradients",
    image_mass_token_map,
    image_mass_sentence_map,
};

uint32_t dexar_plugin_abi_version(void) { return DEXAR_PLUGIN_ABI_VERSION; }

const DexarPluginDescriptor *dexar_plugin_entry(void) { return &DESCRIPTOR; }
