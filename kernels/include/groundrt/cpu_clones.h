/* CPU library only: the hottest loops are also compiled for AVX2 on x86-64 and the clone is
 * picked at load time (GCC's target_clones). Same IEEE operations, no contraction (the library
 * builds with -ffp-contract=off): both clones give the same bits. */
#ifndef GROUNDRT_CPU_CLONES_H
#define GROUNDRT_CPU_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GRT_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GRT_AVX2_CLONES
#endif

#endif /* GROUNDRT_CPU_CLONES_H */
