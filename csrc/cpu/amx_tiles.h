// The AMX tile configuration shared by the AMX kernels (linear_packed_amx.cc,
// attention_amx.cc): palette 1, eight tile registers of up to 16 rows x 64 bytes.
// Include only from translation units compiled with -mamx-tile.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fastdllm::cpu::amx {

constexpr int kTileRows = 16;  // rows of a tile; also fp32 columns of a C tile

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

// Tile i gets `rows[i]` rows of 64 bytes; palette 1 has 8 tiles.
inline void load_tile_config(const uint8_t (&rows)[8]) {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = rows[i];
  }
  // GCC 12 does not treat ldtilecfg's operand as read memory and may drop or
  // sink the stores above past it (the SIGILL llama.cpp's AMX code hit): the
  // barrier forces cfg to be written before the instruction reads it.
  asm volatile("" ::: "memory");
  _tile_loadconfig(&cfg);
}

}  // namespace fastdllm::cpu::amx
