/* Whole-array loops built for the vector units the machine has.
 *
 * GCC's -O2 cost model ("very cheap") leaves loops of unknown length
 * scalar, and the x86-64 baseline is SSE2. GP_VECTORIZE turns the dynamic
 * cost model on for one function and, on x86-64 with GCC, builds it also
 * for AVX2 and AVX-512, picked at load time (an ifunc): the binary still
 * runs on any x86-64. GP_VECTORIZE_SELECT adds no-trapping-math, which
 * lets GCC turn selects on floats into vector blends (gradpool never reads
 * FP exceptions, so no result changes).
 *
 * A loop that sums keeps its partial sums in lanes of its own (an array of
 * them), so that vectorising it does not reorder any addition: the
 * result is the same on every machine, whichever version runs. Loops that
 * multiply and add may be contracted to FMAs where the unit has them, so
 * elementwise results can differ in the last bit between machines; use
 * these only where that is allowed (not in what must match an agent's
 * copy bit for bit). */
#ifndef GP_VECTORIZE_H
#define GP_VECTORIZE_H

#if defined(__x86_64__) && defined(__has_attribute) && !defined(__clang__)
#if __has_attribute(target_clones)
#define GP_VECTORIZE __attribute__((optimize("tree-vectorize", \
		"vect-cost-model=dynamic"), \
		target_clones("avx512f", "avx2", "default")))
#define GP_VECTORIZE_SELECT __attribute__((optimize("tree-vectorize", \
		"vect-cost-model=dynamic", "no-trapping-math"), \
		target_clones("avx512f", "avx2", "default")))
#endif
#endif
#if !defined(GP_VECTORIZE) && defined(__GNUC__) && !defined(__clang__)
#define GP_VECTORIZE __attribute__((optimize("tree-vectorize", \
		"vect-cost-model=dynamic")))
#define GP_VECTORIZE_SELECT __attribute__((optimize("tree-vectorize", \
		"vect-cost-model=dynamic", "no-trapping-math")))
#endif
#ifndef GP_VECTORIZE
#define GP_VECTORIZE
#define GP_VECTORIZE_SELECT
#endif

#endif
