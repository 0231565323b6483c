/* Little-endian loads and stores of fixed-width integers and floats (and
 * the big-endian loads some file formats need), the one copy every module
 * uses for wire formats, checkpoints and files.
 * Byte-wise, so they work at any alignment on any host; compilers turn them
 * into single loads and stores. p is borrowed and must hold the width. */
#ifndef GP_ENDIAN_H
#define GP_ENDIAN_H

#include <stdint.h>
#include <string.h>

static inline void gp_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void gp_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void gp_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t gp_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t gp_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t gp_get_le64(const uint8_t *p)
{
	return (uint64_t)gp_get_le32(p) | (uint64_t)gp_get_le32(p + 4) << 32;
}

/* Big-endian loads, for the formats that chose them: IDX data files and
 * the SQLite file header. */
static inline uint16_t gp_get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t gp_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* IEEE 754 binary32/binary64 through their bit patterns. */
static inline void gp_put_lef32(uint8_t *p, float v)
{
	uint32_t u;
	memcpy(&u, &v, sizeof(u));
	gp_put_le32(p, u);
}

static inline float gp_get_lef32(const uint8_t *p)
{
	uint32_t u = gp_get_le32(p);
	float v;
	memcpy(&v, &u, sizeof(v));
	return v;
}

static inline void gp_put_lef64(uint8_t *p, double v)
{
	uint64_t u;
	memcpy(&u, &v, sizeof(u));
	gp_put_le64(p, u);
}

static inline double gp_get_lef64(const uint8_t *p)
{
	uint64_t u = gp_get_le64(p);
	double v;
	memcpy(&v, &u, sizeof(v));
	return v;
}

#endif
