// Python's `random.Random`, bit for bit, for the two places where lm-evaluation-harness's numbers
// depend on it: the default few-shot sampler (`Random(1234).sample(pool, n)`) and the bootstrap
// standard errors (`Random(i).choices(xs, k=len(xs))`). Same MT19937 state, same seeding from an
// int (init_by_array over the 32-bit words of |seed|), same float construction and the same
// rejection sampling in randbelow / sample as CPython's Lib/random.py and Modules/_randommodule.c.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace mlr::eval {

class PythonRandom {
 public:
  explicit PythonRandom(uint64_t seed) { seed_from(seed); }

  void seed_from(uint64_t seed);
  uint32_t next_u32();                 // genrand_uint32
  double random();                     // random.random(): 53 random bits in [0, 1)
  uint64_t getrandbits(int k);         // 0 <= k <= 64
  uint64_t randbelow(uint64_t n);      // _randbelow_with_getrandbits, n >= 1
  // random.sample(range(n), k): k distinct indices, in the order Python returns them.
  std::vector<int64_t> sample(int64_t n, int64_t k);
  // random.choices(range(n), k=k): k indices drawn with replacement.
  std::vector<int64_t> choices(int64_t n, int64_t k);

 private:
  static constexpr int kN = 624;
  void init_genrand(uint32_t s);
  std::array<uint32_t, kN> mt_{};
  int index_ = kN;
};

}  // namespace mlr::eval
